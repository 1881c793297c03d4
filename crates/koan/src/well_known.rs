//! Well-known action and event names: the built-in actions every periodic service
//! answers (`trigger`, `check-queue`, `process-batch`) and the names of the demo's
//! sample services (flow, health, outbox, messaging, translation).

/// Well-known action names.
pub mod actions {
    /// Built-in: run a periodic service's tick now.
    pub const TRIGGER: &str = "trigger";
    /// Built-in: the `check-queue` command.
    pub const CHECK_QUEUE: &str = "check-queue";
    /// Built-in: the `process-batch` command.
    pub const PROCESS_BATCH: &str = "process-batch";

    /// The built-in poke `name` stands for, in any spelling the built-ins answer to
    /// (`Trigger`, `trigger-now`, `check_queue`): [`TRIGGER`], [`CHECK_QUEUE`] or
    /// [`PROCESS_BATCH`]. A periodic service's declared action of that name comes
    /// first: this says only what the name means when none is declared.
    pub fn poke(name: &str) -> Option<&'static str> {
        // Compared in place, without an allocation: every call sent to another
        // process asks this of its action's name (B8's round trip).
        let same = |written: &str| {
            name.len() == written.len()
                && name
                    .bytes()
                    .zip(written.bytes())
                    .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
        };
        match name.len() {
            7 if same(TRIGGER) => Some(TRIGGER),
            11 if same("trigger-now") => Some(TRIGGER),
            11 if same(CHECK_QUEUE) => Some(CHECK_QUEUE),
            13 if same(PROCESS_BATCH) => Some(PROCESS_BATCH),
            _ => None,
        }
    }

    /// Health actions.
    pub mod health {
        /// Schedule health probes now.
        pub const FORCE_PROBE: &str = "ForceProbe";
    }
    /// Flow actions.
    pub mod flow {
        /// Start processing now.
        pub const TRIGGER_PROCESSING: &str = "TriggerProcessing";
    }
    /// Outbox actions.
    pub mod outbox {
        /// Process one batch of the outbox.
        pub const PROCESS_BATCH: &str = "ProcessBatch";
    }
    /// Messaging actions.
    pub mod messaging {
        /// Restart the messaging service.
        pub const RESTART_MESSAGING: &str = "RestartMessaging";
    }
    /// Translation actions.
    pub mod translation {
        /// Translate a file.
        pub const TRANSLATE: &str = "translate";
        /// Check the translation queue.
        pub const CHECK_QUEUE: &str = "check-queue";
    }
}

/// Well-known event names.
pub mod events {
    /// Flow events.
    pub mod flow {
        /// An entity was processed.
        pub const ENTITY_PROCESSED: &str = "Flow.EntityProcessed";
        /// An entity was parked.
        pub const ENTITY_PARKED: &str = "Flow.EntityParked";
        /// An entity failed.
        pub const ENTITY_FAILED: &str = "Flow.EntityFailed";
    }
    /// Health events.
    pub mod health {
        /// Probes were scheduled.
        pub const PROBE_SCHEDULED: &str = "Health.ProbeScheduled";
        /// A probe was broadcast.
        pub const PROBE_BROADCAST: &str = "Health.ProbeBroadcast";
    }
    /// Outbox events.
    pub mod outbox {
        /// A batch was processed.
        pub const PROCESSED: &str = "Outbox.Processed";
        /// A batch failed.
        pub const FAILED: &str = "Outbox.Failed";
    }
    /// Messaging events.
    pub mod messaging {
        /// Messaging is ready.
        pub const READY: &str = "Messaging.Ready";
        /// Messaging failed.
        pub const FAILED: &str = "Messaging.Failed";
    }
    /// Translation events.
    pub mod translation {
        /// A translation started.
        pub const STARTED: &str = "TranslationStarted";
        /// A translation completed.
        pub const COMPLETED: &str = "TranslationCompleted";
        /// A translation failed.
        pub const FAILED: &str = "TranslationFailed";
    }
}

#[cfg(test)]
mod tests {
    use super::actions::{CHECK_QUEUE, PROCESS_BATCH, TRIGGER, poke};

    #[test]
    fn a_poke_is_known_in_each_spelling_the_built_ins_answer_to() {
        for (name, builtin) in [
            ("trigger", Some(TRIGGER)),
            ("Trigger", Some(TRIGGER)),
            ("trigger-now", Some(TRIGGER)),
            ("TRIGGER_NOW", Some(TRIGGER)),
            ("check_queue", Some(CHECK_QUEUE)),
            ("Check-Queue", Some(CHECK_QUEUE)),
            ("process-batch", Some(PROCESS_BATCH)),
            ("PROCESS_BATCH", Some(PROCESS_BATCH)),
            ("triggers", None),
            ("CheckQueue", None),
            ("translate", None),
            ("", None),
            ("trigger-now-please", None),
        ] {
            assert_eq!(poke(name), builtin, "{name}");
        }
    }
}
