//! `tanova-sync completions SHELL` and `tanova-sync man`: generated from the command-line definition, printed to stdout.

use std::io::Write;

use clap::CommandFactory;
use clap_complete::Shell;

use super::args::Cli;
use super::Exit;

/// The name the scripts and the page complete and describe.
const BIN: &str = "tanova-sync";

pub fn completions(shell: Shell) -> Exit {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), BIN, &mut out);
    emit(&out)
}

pub fn man() -> Exit {
    let mut out = Vec::new();
    match clap_mangen::Man::new(Cli::command()).render(&mut out) {
        Ok(()) => emit(&out),
        Err(e) => {
            eprintln!("error: cannot render the man page: {e}");
            Exit::SomeFailed
        }
    }
}

fn emit(bytes: &[u8]) -> Exit {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Exit::Ok,
        // A closed pipe (`| head`) is not worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Exit::Ok,
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            Exit::SomeFailed
        }
    }
}
