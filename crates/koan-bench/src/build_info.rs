//! How this binary was built, printed above its table: the build profile moves the
//! ratios more than most changes do (BENCHMARKS.md, "Build profile"), so a table
//! says which one its figures are of. Filled in by `build.rs`.

/// What `build.rs` saw when this binary was compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BuildInfo {
    pub(crate) profile: &'static str,
    pub(crate) opt_level: &'static str,
    /// `CARGO_PROFILE_<PROFILE>_LTO` and `_CODEGEN_UNITS`, empty when not set.
    pub(crate) lto: &'static str,
    pub(crate) codegen_units: &'static str,
    /// `RUSTFLAGS` (or `build.rustflags`), space-separated.
    pub(crate) rustflags: &'static str,
}

/// This binary's.
pub(crate) const THIS: BuildInfo = BuildInfo {
    profile: env!("KOAN_BENCH_BUILD_PROFILE"),
    opt_level: env!("KOAN_BENCH_BUILD_OPT_LEVEL"),
    lto: env!("KOAN_BENCH_BUILD_LTO"),
    codegen_units: env!("KOAN_BENCH_BUILD_CODEGEN_UNITS"),
    rustflags: env!("KOAN_BENCH_BUILD_RUSTFLAGS"),
};

impl std::fmt::Display for BuildInfo {
    /// `build: release (opt-level 3), lto fat, codegen-units 1, RUSTFLAGS …`, or
    /// that the environment overrode nothing (the profile is then the workspace's,
    /// unless a Cargo config file or `--config` changed it, which `build.rs` does
    /// not see).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "build: {} (opt-level {})", self.profile, self.opt_level)?;
        let mut overridden = false;
        for (name, value) in [("lto", self.lto), ("codegen-units", self.codegen_units)] {
            if !value.is_empty() {
                write!(f, ", {name} {value}")?;
                overridden = true;
            }
        }
        if !overridden {
            f.write_str(", no profile override in the environment")?;
        }
        if !self.rustflags.is_empty() {
            write!(f, ", RUSTFLAGS `{}`", self.rustflags)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_says_its_profile_and_only_the_overrides_it_had() {
        let plain = BuildInfo {
            profile: "release",
            opt_level: "3",
            lto: "",
            codegen_units: "",
            rustflags: "",
        };
        assert_eq!(
            plain.to_string(),
            "build: release (opt-level 3), no profile override in the environment"
        );
        let lto = BuildInfo {
            lto: "fat",
            codegen_units: "1",
            rustflags: "-C force-frame-pointers=yes",
            ..plain
        };
        assert_eq!(
            lto.to_string(),
            "build: release (opt-level 3), lto fat, codegen-units 1, RUSTFLAGS `-C force-frame-pointers=yes`"
        );
        // This binary's own line names the profile it was built in.
        assert!(THIS.to_string().starts_with("build: "), "{THIS}");
        assert!(!THIS.profile.is_empty());
    }
}
