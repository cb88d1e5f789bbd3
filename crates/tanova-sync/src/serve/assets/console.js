// tanova-sync console: local times and live updates. The page reads correctly without it.
"use strict";
(function () {
  var rtf = window.Intl && Intl.RelativeTimeFormat ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }) : null;
  function relative(date) {
    var s = (date.getTime() - Date.now()) / 1000, a = Math.abs(s);
    if (!rtf) return "";
    if (a < 60) return rtf.format(Math.round(s), "second");
    if (a < 3600) return rtf.format(Math.round(s / 60), "minute");
    if (a < 86400) return rtf.format(Math.round(s / 3600), "hour");
    return rtf.format(Math.round(s / 86400), "day");
  }
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (isNaN(d.getTime())) return;
      var local = d.toLocaleString();
      var rel = relative(d);
      t.textContent = rel ? rel + " (" + local + ")" : local;
      t.title = local;
    });
  }
  var shown = {};
  function swap(id, html) {
    var el = document.getElementById(id);
    if (!el || shown[id] === html) return;
    var focused = document.activeElement && document.activeElement.id;
    el.innerHTML = html;
    shown[id] = html;
    localTimes(el);
    if (focused && el.contains(document.getElementById(focused))) document.getElementById(focused).focus();
  }
  function start() {
    localTimes(document);
    setInterval(function () { localTimes(document); }, 15000);
    var live = document.getElementById("live");
    if (!window.EventSource) {
      setTimeout(function () { location.reload(); }, 5000);
      return;
    }
    var events = new EventSource("/events");
    events.addEventListener("state", function (e) {
      var data = JSON.parse(e.data);
      Object.keys(data).forEach(function (id) { swap(id, data[id]); });
      if (live) live.textContent = "· live";
      document.body.setAttribute("data-live", "1");
    });
    events.onerror = function () {
      if (live) live.textContent = "· reconnecting…";
    };
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
