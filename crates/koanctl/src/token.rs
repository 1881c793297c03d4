//! The bearer token as given: `--token` or `KOAN_TOKEN` (text, `@file`, or `@@…` for a
//! token that starts with `@`), or, for a host on this machine, the host's own
//! `KOAN_HTTP_TOKEN` (as the host reads it: text). Read and checked once, before
//! any request, so a bad one is named as the token and not as a URL.

use std::time::Duration;

use crate::client::Failure;

/// The token to send to `url`, if any: `given` (`--token` or `KOAN_TOKEN`), else,
/// when `url` is a loopback address, the host's variable `KOAN_HTTP_TOKEN` (an
/// operator on the host's machine has it exported; before, koanctl ignored it and
/// the host's 401 named only that variable). Never sent to another host unasked
/// (a review).
///
/// A token file is waited for at most `wait` (the request timeout): `--token
/// @fifo`, a named pipe no one writes to, hung koanctl for ever (a probe).
pub(crate) fn resolve(
    given: Option<String>,
    url: &str,
    wait: Duration,
) -> Result<Option<String>, Failure> {
    // An empty `--token` or `KOAN_TOKEN` is refused as a usage error (`flags::token`).
    let raw = match given {
        Some(t) => t,
        None => {
            return match std::env::var("KOAN_HTTP_TOKEN") {
                Ok(t) if !t.is_empty() && loopback(url) => check(&t, "KOAN_HTTP_TOKEN"),
                _ => Ok(None),
            };
        }
    };
    let from = "--token or KOAN_TOKEN";
    if let Some(literal) = raw.strip_prefix("@@") {
        return check(&format!("@{literal}"), from);
    }
    let (text, from) = match raw.strip_prefix('@') {
        Some(path) => {
            let text = read_within(path, wait).map_err(|e| {
                Failure::Input(format!("cannot read the token file `{path}` ({from}): {e}"))
            })?;
            (text, format!("the token file `{path}`"))
        }
        None => (raw, from.to_owned()),
    };
    check(&text, &from)
}

/// The most bytes a token file is read for: `--token @/dev/zero` read until memory
/// ran out (a re-probe).
const MAX_FILE: u64 = 64 * 1024;

/// `read_file(path)`, given up after `wait`: the read goes on in a thread of its
/// own, left behind blocked (koanctl exits with the error).
fn read_within(path: &str, wait: Duration) -> std::io::Result<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = path.to_owned();
    std::thread::spawn(move || tx.send(read_file(&owned)));
    rx.recv_timeout(wait).unwrap_or_else(|_| {
        Err(std::io::Error::other(format!(
            "it was not read to its end within {} (a named pipe no one writes to, or whose writer keeps it open?)",
            crate::deadline::show(wait)
        )))
    })
}

/// A token file's text, a UTF-8 byte-order mark dropped (Notepad writes one).
fn read_file(path: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(std::io::Error::other(format!(
            "it is longer than {MAX_FILE} bytes: not a token"
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| std::io::Error::other("it is not UTF-8 text (saved as UTF-16?)"))?;
    Ok(text
        .strip_prefix('\u{feff}')
        .map(str::to_owned)
        .unwrap_or(text))
}

/// Whether `url` names this machine (`localhost`, `127.x.x.x`, `[::1]`).
fn loopback(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `text` as a token, from `from`: its ends' whitespace dropped, refused empty or
/// with a character no header could carry.
fn check(text: &str, from: &str) -> Result<Option<String>, Failure> {
    // A file's line end, or `$(cat file)` of one with CRLF ends, is not part of it.
    let token = text.trim_matches(|c: char| c.is_ascii_whitespace());
    if token.is_empty() {
        return Err(Failure::Input(format!("the token from {from} is empty")));
    }
    if let Some((at, c)) = token.char_indices().find(|(_, c)| !c.is_ascii_graphic()) {
        return Err(Failure::Input(format!(
            "the token from {from} has {} at byte {at}: a token is visible ASCII, sent in `Authorization: Bearer <token>`",
            describe(c)
        )));
    }
    Ok(Some(token.to_owned()))
}

/// A character a token may not hold, named without printing it.
fn describe(c: char) -> String {
    match c {
        '\r' => "a carriage return (a file with CRLF line ends?)".to_owned(),
        '\n' => "a line break".to_owned(),
        ' ' | '\t' => "a space".to_owned(),
        c if c.is_control() => format!("a control character (U+{:04X})", u32::from(c)),
        _ => "a non-ASCII character".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{loopback, resolve};
    use crate::client::Failure;

    const URL: &str = "http://127.0.0.1:8080";

    /// `resolve` with a file waited for as long as any test could need.
    fn resolve_now(given: Option<String>, url: &str) -> Result<Option<String>, Failure> {
        resolve(given, url, Duration::from_secs(3600))
    }

    /// The refusal of `given`, as text.
    fn refused(given: &str) -> anyhow::Result<String> {
        match resolve_now(Some(given.to_owned()), URL) {
            Ok(_) => anyhow::bail!("{given:?} was taken"),
            Err(e) => Ok(e.to_string()),
        }
    }

    #[test]
    fn a_files_line_end_is_dropped_and_its_inner_breaks_are_named() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("koanctl-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let crlf = dir.join("crlf");
        std::fs::write(&crlf, "s3cret-token\r\n")?;
        let got = resolve_now(Some(format!("@{}", crlf.display())), URL)?;
        assert_eq!(got.as_deref(), Some("s3cret-token"));

        let err = refused("abc\rdef")?;
        assert!(
            err.contains("carriage return") && err.contains("--token or KOAN_TOKEN"),
            "{err}"
        );
        assert!(!err.contains("abc"), "the token is never printed: {err}");

        let bom = dir.join("bom");
        std::fs::write(&bom, "\u{feff}s3cret-token\r\n")?;
        let got = resolve_now(Some(format!("@{}", bom.display())), URL)?;
        assert_eq!(got.as_deref(), Some("s3cret-token"));
        let long = dir.join("long");
        std::fs::write(&long, "x".repeat(70_000))?;
        let err = refused(&format!("@{}", long.display()))?;
        assert!(err.contains("longer than 65536 bytes"), "{err}");

        let empty = dir.join("empty");
        std::fs::write(&empty, "\n")?;
        let err = refused(&format!("@{}", empty.display()))?;
        assert!(err.contains("is empty"), "{err}");

        let err = refused("@/definitely/not/here")?;
        assert!(
            err.contains("cannot read the token file `/definitely/not/here`"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir)?;

        assert_eq!(
            resolve_now(Some("@@at-first".into()), URL)?.as_deref(),
            Some("@at-first")
        );
        Ok(())
    }

    /// A named pipe no one writes to is given up on after the wait, and named.
    #[test]
    fn a_pipe_no_one_writes_to_is_given_up_on() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("koanctl-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let fifo = dir.join("token");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status()?;
        anyhow::ensure!(made.success(), "mkfifo failed");
        let given = Some(format!("@{}", fifo.display()));
        let err = match resolve(given, URL, Duration::from_millis(50)) {
            Ok(_) => anyhow::bail!("a token was read from an empty pipe"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("it was not read to its end within"), "{err}");
        assert!(err.contains("named pipe"), "{err}");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    /// The host's own variable goes only to a host on this machine.
    #[test]
    fn only_loopback_urls_are_loopback() {
        for url in [
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:80/koan",
        ] {
            assert!(loopback(url), "{url}");
        }
        for url in [
            "http://10.0.0.5:8080",
            "http://ops.example.com",
            "not a url",
        ] {
            assert!(!loopback(url), "{url}");
        }
    }
}
