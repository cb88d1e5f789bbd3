// tanova-sync setup page: check the folder and test the key before saving. The form works without it.
"use strict";
(function () {
  function ask(step, resultId) {
    var form = document.getElementById("setup");
    var out = document.getElementById(resultId);
    out.textContent = "Checking…";
    fetch("/setup/" + step, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json" },
      body: new URLSearchParams(new FormData(form)).toString(),
      credentials: "same-origin"
    }).then(function (r) { return r.json(); }).then(function (answer) {
      out.textContent = answer.message;
      out.className = answer.ok ? "ok" : "failed";
    }, function () {
      out.textContent = "The agent did not answer.";
      out.className = "failed";
    });
  }
  function start() {
    var folder = document.getElementById("check-folder");
    var key = document.getElementById("test-key");
    folder.hidden = false;
    key.hidden = false;
    folder.addEventListener("click", function () { ask("folder", "folder-result"); });
    key.addEventListener("click", function () { ask("key", "key-result"); });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
