//! The name of the machine a host runs on, for the names operators read
//! (instances, job attempts): `$HOSTNAME` when the environment has it, else the
//! kernel's. Bash sets `HOSTNAME` without exporting it, and systemd does not set
//! it: a host read only the variable, and was named `host-12171` on machine `vm`;
//! a cluster host's name had no machine in it at all (a probe).

/// This machine's name: `HOSTNAME`, else the kernel's (`/proc/sys/kernel/hostname`,
/// `/etc/hostname`), else `host`; letters, digits and `-` only (others become
/// `-`), at most 63 characters, so that it is safe in a NATS subject or a key.
pub fn machine_name() -> String {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let raw = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| read("/proc/sys/kernel/hostname"))
        .or_else(|| read("/etc/hostname"))
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .take(63)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() {
        "host".to_owned()
    } else {
        name
    }
}

#[cfg(all(test, not(koan_loom)))]
mod tests {
    #[test]
    fn a_machine_name_is_safe_in_a_subject() {
        let name = super::machine_name();
        assert!(!name.is_empty() && name.len() <= 63, "{name}");
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{name}"
        );
    }
}
