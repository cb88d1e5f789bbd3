//! Docker for the deployment tests: Debian's client (its built-in BuildKit), the base image built from debootstrap when missing, and images, containers and volumes removed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::require_tool;

/// The base image the Dockerfile names.
pub const BASE_IMAGE: &str = "debian:bookworm-slim";

/// The repository's root (the Dockerfile, packaging/).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// A reachable Docker daemon, or `None` where there is none (a failure with `CI` set).
pub struct Docker {
    bin: PathBuf,
}

impl Docker {
    pub fn find() -> Option<Self> {
        // Debian's docker.io client: it builds with the daemon's own BuildKit,
        // which the Dockerfile needs to skip the stage that compiles.
        let bin = match Path::new("/usr/bin/docker") {
            p if p.is_file() => p.to_path_buf(),
            _ => require_tool(&["docker"], "apt-get install docker.io")?,
        };
        let docker = Docker { bin };
        let info = docker.run(&["info", "--format", "{{.ServerVersion}}"]);
        if !info.status.success() {
            assert!(
                !super::tools_required(),
                "no Docker daemon answers, and CI is set (.ci/run starts dockerd): {}",
                String::from_utf8_lossy(&info.stderr)
            );
            eprintln!("SKIPPED: no Docker daemon answers; CI runs this test");
            return None;
        }
        Some(docker)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args).env("DOCKER_BUILDKIT", "1");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("docker runs")
    }

    /// Run and insist on success; stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "docker {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Build [`BASE_IMAGE`] with packaging/docker/base-image.sh unless it is there.
    pub fn ensure_base_image(&self) {
        if self.run(&["image", "inspect", BASE_IMAGE]).status.success() {
            return;
        }
        require_tool(&["debootstrap"], "apt-get install debootstrap")
            .expect("debootstrap builds the base image");
        let script = repo_root().join("packaging/docker/base-image.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(BASE_IMAGE)
            .env("DOCKER", &self.bin)
            .output()
            .expect("the base image script runs");
        assert!(
            out.status.success(),
            "{}: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The repository's Dockerfile built with this test binary as `dist/tanova-sync`.
    pub fn build_image(&self, tag: &str) -> Image<'_> {
        self.ensure_base_image();
        let context = tempfile::tempdir().unwrap();
        std::fs::copy(
            repo_root().join("Dockerfile"),
            context.path().join("Dockerfile"),
        )
        .unwrap();
        std::fs::create_dir(context.path().join("dist")).unwrap();
        let binary = context.path().join("dist/tanova-sync");
        std::fs::copy(super::BIN, &binary).unwrap();
        // Debug info is most of a test build's size; the image needs none of it.
        let _ = Command::new("strip")
            .arg("--strip-debug")
            .arg(&binary)
            .status();
        // No network for RUN steps: the runtime stage needs none, and the
        // daemon .ci/run starts has no bridge to give them.
        self.ok(&[
            "build",
            "--quiet",
            "--network",
            "none",
            "--build-arg",
            "BINARY=prebuilt",
            "-t",
            tag,
            &context.path().display().to_string(),
        ]);
        Image {
            docker: self,
            tag: tag.to_string(),
        }
    }
}

/// An image removed when dropped.
pub struct Image<'a> {
    pub docker: &'a Docker,
    pub tag: String,
}

impl Drop for Image<'_> {
    fn drop(&mut self) {
        let _ = self.docker.run(&["rmi", "-f", &self.tag]);
    }
}

/// Containers and volumes removed when dropped, even when the test fails.
pub struct Cleanup<'a> {
    pub docker: &'a Docker,
    pub containers: Vec<String>,
    pub volumes: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = self.docker.run(&["rm", "-f", "-v", c]);
        }
        for v in &self.volumes {
            let _ = self.docker.run(&["volume", "rm", "-f", v]);
        }
    }
}
