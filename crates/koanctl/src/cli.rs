//! The command line, as clap definitions.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use clap_complete::Shell;

use crate::deadline::parse_limit;

/// The most runs `history --limit` asks for: the most a host keeps
/// (`koan.background_services.history_size` is at most 10000).
pub(crate) const MAX_HISTORY: u64 = 10_000;

/// The default address of the control plane.
pub(crate) const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Command-line client of the koan HTTP control plane.
#[derive(Debug, Parser)]
#[command(
    name = "koanctl",
    version,
    about,
    propagate_version = true,
    after_help = "Exit codes: 0 done; 1 an answer the API does not promise (fields missing, a redirect, past the size cap); 2 bad input; 3 the API answered an error; 4 the host unreachable, silent past a deadline, or gone; 5 the answer printed is stale (a cluster host could not read the current job records)."
)]
pub(crate) struct Cli {
    /// Base URL of the control plane, e.g. `http://127.0.0.1:8080` or
    /// `http://host/prefix` (no user, password or query: the token goes in --token).
    #[arg(long, global = true, env = "KOAN_URL", default_value = DEFAULT_URL)]
    pub(crate) url: String,

    /// Bearer token, sent as `Authorization: Bearer <token>`: the token, `@file` to
    /// read it from a file (its line end dropped), or `@@…` for one starting with
    /// `@`. Without it, for a host on this machine (a loopback `--url`), the host's
    /// own `KOAN_HTTP_TOKEN` when set. An empty one (`--token ""`, `KOAN_TOKEN=`) is
    /// refused.
    #[arg(
        long,
        global = true,
        env = "KOAN_TOKEN",
        hide_env_values = true,
        value_parser = crate::flags::token
    )]
    pub(crate) token: Option<String>,

    /// Print the server's JSON as-is (one document per line for `events`); an error
    /// the API answers (exit 3) is printed too, as its `{"error","message"}` document.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// Give up on an answer after this long, e.g. `30s`, `2m`, `500ms` (exit 4). A call
    /// that waits with `--timeout T` gets T more; `events` gets this long to open the
    /// stream, then its `--idle-timeout` applies.
    #[arg(
        long,
        global = true,
        env = "KOAN_REQUEST_TIMEOUT",
        value_name = "DURATION",
        default_value = "30s",
        value_parser = parse_limit
    )]
    pub(crate) request_timeout: Duration,

    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List every service: kind, state, health, run counts, queue, next run.
    Services,
    /// Describe a service: schedule, actions with their parameters, events.
    Info {
        /// The service (case-insensitive).
        name: String,
    },
    /// Show the status of a service.
    Status {
        /// The service (case-insensitive).
        name: String,
    },
    /// Show the host's health, or one service's with NAME.
    Health {
        /// A service (case-insensitive); the whole host when left out.
        name: Option<String>,
    },
    /// Run an action of a service and print its result.
    Act(ActArgs),
    /// Start again a background service its supervisor gave up on (`failed`).
    Restart {
        /// The service (case-insensitive).
        name: String,
    },
    /// Run a periodic service now.
    Trigger {
        /// The service (case-insensitive).
        name: String,
        /// Options of the call.
        #[command(flatten)]
        call: CallArgs,
    },
    /// Ask a periodic service to check its queue.
    CheckQueue {
        /// The service (case-insensitive).
        name: String,
        /// Options of the call.
        #[command(flatten)]
        call: CallArgs,
    },
    /// Ask a periodic service to process a batch.
    ProcessBatch {
        /// The service (case-insensitive).
        name: String,
        /// How many items to take at most.
        #[arg(long)]
        batch_size: Option<u32>,
        /// Which items to take.
        #[arg(long)]
        filter: Option<String>,
        /// Options of the call.
        #[command(flatten)]
        call: CallArgs,
    },
    /// Follow live events until Ctrl-C: time, service, event, correlation id, payload.
    ///
    /// Exits 4 when the host closes the stream or goes quiet for longer than
    /// --idle-timeout.
    Events {
        /// Only the events of this service.
        #[arg(long)]
        service: Option<String>,
        /// Only events with this name.
        #[arg(long)]
        event: Option<String>,
        /// Give up when the host sends nothing for this long (it sends a keep-alive
        /// every 15 s), e.g. `45s`, `2m`.
        #[arg(
            long,
            env = "KOAN_EVENTS_IDLE_TIMEOUT",
            value_name = "DURATION",
            default_value = "45s",
            value_parser = parse_limit
        )]
        idle_timeout: Duration,
    },
    /// A service's last runs, newest first: start, reason, duration, outcome.
    History {
        /// The service (case-insensitive).
        name: String,
        /// Show at most this many runs, 1 to 10000 (a host keeps at most 10000; the
        /// host's document, with `--json`, is cut to as many).
        #[arg(
            long,
            value_name = "N",
            value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_HISTORY)
        )]
        limit: Option<usize>,
    },
    /// The hosts of the cluster (without one, this host): heartbeat, load, services.
    Instances,
    /// Stored jobs (enqueued actions): list, show, retry, cancel, delete.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Print a shell completion script (bash, zsh, fish, …).
    Completions {
        /// The shell.
        shell: Shell,
    },
}

/// Refuses a global option (`--url`, `--token`, `--json`, `--request-timeout`)
/// given more than once in `args` (the command line, program name first), as clap
/// refuses one given twice at one level. Given before and after the subcommand
/// (`koanctl --url A services --url B`), clap took the last without a word, and
/// the command ran against B (found by a probe): clap gives each level's matches
/// the same value, so the command line itself is read. Before `--`, a word that is
/// `--url` or starts with `--url=` is the option, never another's value: clap
/// takes no value starting with `--` (no option of koanctl allows one).
pub(crate) fn globals_once(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<(), clap::Error> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    // Built, for an argument to show itself as clap's errors do (`--url <URL>`).
    cmd.build();
    let words: Vec<String> = args
        .into_iter()
        .skip(1)
        .map_while(|a| a.into_string().ok().filter(|w| w != "--"))
        .collect();
    let globals: Vec<(String, String)> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set())
        .filter_map(|a| Some((format!("--{}", a.get_long()?), a.to_string())))
        .collect();
    for (flag, arg) in globals {
        let given = words
            .iter()
            .filter(|w| **w == flag || w.starts_with(&format!("{flag}=")))
            .count();
        if given > 1 {
            let message = format!(
                "the argument '{arg}' cannot be used multiple times (it is given {given} \
                 times, before and after the subcommand): give it once"
            );
            return Err(cmd.error(clap::error::ErrorKind::ArgumentConflict, message));
        }
    }
    Ok(())
}

/// `koanctl act NAME ACTION …`.
#[derive(Debug, Args)]
pub(crate) struct ActArgs {
    /// The service (case-insensitive).
    pub(crate) name: String,
    /// The action.
    pub(crate) action: String,
    /// Parameters: JSON text, `@file` to read a file, or `@-` to read standard input.
    #[arg(long, value_name = "JSON|@FILE")]
    pub(crate) params: Option<String>,
    /// Options of the call.
    #[command(flatten)]
    pub(crate) call: CallArgs,
}

/// Options shared by the calls that run something.
#[derive(Debug, Args, Clone)]
pub(crate) struct CallArgs {
    /// Priority in the service's mailbox (higher runs first).
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) priority: Option<i32>,
    /// Give up after this long, e.g. `30s`, `2m` (the server's deadline, queue time
    /// included; with --no-wait a job's, counted from its run's start; koanctl
    /// waits this plus --request-timeout for the answer).
    #[arg(long, value_parser = crate::flags::timeout)]
    pub(crate) timeout: Option<String>,
    /// Correlation id to attach (sent as `X-Correlation-Id`; 1 to 200 printable
    /// ASCII characters, spaces included, none at either end).
    #[arg(long, value_name = "ID", value_parser = crate::flags::correlation_id)]
    pub(crate) correlation_id: Option<String>,
    /// Enqueue as a job and return once it is stored, printing its id and status URL.
    #[arg(long)]
    pub(crate) no_wait: bool,
    /// With --no-wait: run the job no sooner than this from now, e.g. `30s`, `2h`.
    #[arg(long, requires = "no_wait", conflicts_with = "at", value_parser = crate::flags::delay)]
    pub(crate) delay: Option<String>,
    /// With --no-wait: run the job no sooner than this RFC 3339 time.
    #[arg(long, requires = "no_wait", value_parser = crate::flags::at)]
    pub(crate) at: Option<String>,
    /// With --no-wait: a key that makes a repeated enqueue return the first job (1 to
    /// 200 visible ASCII characters).
    #[arg(long, requires = "no_wait", value_name = "KEY", value_parser = crate::flags::id)]
    pub(crate) idempotency_key: Option<String>,
}

/// `koanctl jobs …`.
#[derive(Debug, Subcommand)]
pub(crate) enum JobsCommand {
    /// List jobs, newest first.
    List {
        /// Only jobs in this state (scheduled, queued, running, succeeded, retrying,
        /// dead, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// Only jobs of this service.
        #[arg(long, value_parser = crate::flags::name)]
        service: Option<String>,
        /// Only jobs of this action.
        #[arg(long, value_parser = crate::flags::name)]
        action: Option<String>,
        /// Only jobs under this correlation id (the job behind an event).
        #[arg(long, value_name = "ID", value_parser = crate::flags::name)]
        correlation_id: Option<String>,
        /// At most this many (1–500, default 50).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: Option<u32>,
        /// Continue after this id (the `next` the previous page printed).
        #[arg(long, value_parser = crate::flags::name)]
        cursor: Option<String>,
    },
    /// How many jobs are in each state.
    Counts {
        /// Only the jobs of this service.
        #[arg(long, value_parser = crate::flags::name)]
        service: Option<String>,
    },
    /// Show one job: parameters, result or error, and every attempt.
    Show {
        /// The job's id.
        #[arg(value_parser = crate::flags::name)]
        id: String,
    },
    /// Run a dead, cancelled, retrying or succeeded job again now.
    Retry {
        /// The job's id.
        #[arg(value_parser = crate::flags::name)]
        id: String,
    },
    /// Retry every dead job (of one service, or all).
    RetryDead {
        /// Only the dead jobs of this service.
        #[arg(long, value_parser = crate::flags::name)]
        service: Option<String>,
    },
    /// Cancel a job that has not finished.
    Cancel {
        /// The job's id.
        #[arg(value_parser = crate::flags::name)]
        id: String,
    },
    /// Forget a final job (succeeded, dead or cancelled; cancel a live one first).
    Delete {
        /// The job's id.
        #[arg(value_parser = crate::flags::name)]
        id: String,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::{Cli, globals_once};

    #[test]
    fn the_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_global_option_is_given_once_at_any_level() {
        let given = |line: &str| globals_once(line.split(' ').map(Into::into));
        for twice in [
            "koanctl --url http://a services --url http://b",
            "koanctl --url=http://a jobs list --url=http://b",
            "koanctl --token a status S --token=b",
            "koanctl --json services --json",
            "koanctl --request-timeout 1s jobs --request-timeout 2s list",
        ] {
            let e = given(twice).err().map(|e| e.to_string());
            assert!(
                e.as_deref()
                    .is_some_and(|e| e.contains("cannot be used multiple times")),
                "{twice}: {e:?}"
            );
        }
        for once in [
            "koanctl --url http://a services",
            "koanctl services --url http://a --json",
            "koanctl --url-x services",
            "koanctl info -- --url",
            "koanctl --url http://a info -- --url",
        ] {
            assert!(given(once).is_ok(), "{once}");
        }
    }
}
