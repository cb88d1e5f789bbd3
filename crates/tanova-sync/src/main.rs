//! The `tanova-sync` binary: all the work is in the library's `cli` module.

fn main() -> std::process::ExitCode {
    tanova_sync::cli::main()
}
