//! `koanctl`: the command-line client of the koan HTTP control plane.
//!
//! ```text
//! koanctl services                      # every service, as a table
//! koanctl act Greeter greet --params '{"name":"Ada"}'
//! koanctl events --service Greeter      # follow live events until Ctrl-C
//! koanctl history Cleanup               # the service's last runs
//! koanctl instances                     # the hosts of the cluster
//! ```
//!
//! Exit codes: 0 success, 2 usage or bad local input, 3 the server answered an
//! error, 4 the server could not be reached, did not answer within
//! `--request-timeout`, or closed or went quiet on the event stream, 1 anything else
//! (an answer without the fields the API promises, a redirect).

mod act;
mod activity;
mod answers;
mod cli;
mod client;
mod commands;
mod deadline;
mod events;
mod failure;
mod flags;
mod jobs;
mod output;
mod params;
mod spinner;
mod sse;
mod token;

use std::process::ExitCode;

use clap::Parser;

use crate::client::Failure;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if let Err(e) = cli::globals_once(std::env::args_os()) {
        e.exit();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::BrokenPipe
            {
                // The reader went away (`koanctl events | head -1`): not an error.
                return ExitCode::SUCCESS;
            }
            match e.downcast_ref::<Failure>() {
                Some(f) => {
                    // A stale answer was printed: the words under it warn.
                    let label = match f {
                        Failure::Stale(_) => "warning",
                        _ => "error",
                    };
                    eprintln!("{label}: {}", output::printable_block(&f.to_string()));
                    ExitCode::from(f.exit_code())
                }
                None => {
                    eprintln!("error: {}", output::printable_block(&format!("{e:#}")));
                    ExitCode::from(1)
                }
            }
        }
    }
}
