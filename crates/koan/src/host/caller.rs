//! The count a request holds on its host: on the host itself, or on a handle of its
//! caller's own.

use std::ops::Deref;
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use super::HostHandle;

/// A typed handle's own count on its host: on a line of its own, or the handles of
/// neighbouring caller tasks (allocated one after the other) would share one.
pub(crate) type OwnHost = Arc<CachePadded<HostHandle>>;

/// The host a request is made on.
///
/// A request owns a count on its host until it starts (it may be sent to a task of
/// its own). Counted on the host itself, that count is one line that every core
/// calling writes twice a call, the clone and the drop, and the host's registry and
/// `stopping` flag, read on every call, sit beside it (B3's profile: about 3 % of its
/// samples on those two instructions). A typed handle (`Services<T>`) keeps an `Arc`
/// of its own instead, one per clone of the handle and on a line of its own, and its
/// requests count on that: a caller task with its own clone writes only its own line.
#[derive(Clone)]
pub(crate) enum CallerHost {
    /// A handle of the host: by-name calls, stored jobs' runs.
    Host(HostHandle),
    /// A typed handle's own (see [`CallerHost`]).
    Own(OwnHost),
}

impl CallerHost {
    /// A handle of the host, for what outlives the request (a job's ticket, a
    /// subscription).
    pub(crate) fn handle(&self) -> HostHandle {
        HostHandle::clone(self)
    }
}

impl Deref for CallerHost {
    type Target = HostHandle;

    #[inline]
    fn deref(&self) -> &HostHandle {
        match self {
            CallerHost::Host(h) => h,
            CallerHost::Own(h) => h,
        }
    }
}

impl From<HostHandle> for CallerHost {
    fn from(host: HostHandle) -> Self {
        CallerHost::Host(host)
    }
}

impl From<OwnHost> for CallerHost {
    fn from(host: OwnHost) -> Self {
        CallerHost::Own(host)
    }
}

#[cfg(all(test, not(koan_loom)))]
mod tests {
    use std::sync::Arc;

    use crate::{
        ActionContext, Actions, Background, BackgroundService, BoxError, Host, Service,
        ServiceContext, ServiceOptions,
    };

    #[derive(Default)]
    struct Calc;

    impl Service for Calc {
        type Kind = Background;

        fn options() -> ServiceOptions {
            ServiceOptions::named("Calc")
        }

        fn actions(a: &mut Actions<Self>) {
            a.action(
                "add",
                |_: Arc<Self>, p: (u64, u64), _: ActionContext| async move {
                    Ok::<u64, BoxError>(p.0 + p.1)
                },
            );
        }
    }

    impl BackgroundService for Calc {
        async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> {
            cx.cancelled().await;
            Ok(())
        }
    }

    /// A call through a typed handle counts on the handle's own `Arc`, not on the
    /// host's (the line every calling core would write), and each clone of the handle
    /// has its own.
    #[tokio::test]
    async fn a_typed_handle_calls_without_a_count_on_the_host() -> crate::Result<()> {
        let host = Host::builder().service::<Calc>().build()?.start();
        host.started().await?;
        let calc = host.services::<Calc>();
        let copy = calc.clone();
        let on_host = Arc::strong_count(&host.inner);
        let request = copy.action("add", (2_u64, 3_u64));
        assert_eq!(
            Arc::strong_count(&host.inner),
            on_host,
            "no count on the host"
        );
        let own = Arc::strong_count(&copy.host);
        assert_eq!(own, 2, "the request counts on the clone's own handle");
        assert_eq!(
            Arc::strong_count(&calc.host),
            1,
            "not on the first handle's"
        );
        let sum: u64 = request.execute().await?.value()?;
        assert_eq!(sum, 5);
        assert_eq!(Arc::strong_count(&copy.host), 1, "given back once it ran");
        // A by-name call still counts on the host.
        let named = host.service("Calc").action("add", (1_u64, 1_u64));
        assert_eq!(Arc::strong_count(&host.inner), on_host + 1);
        drop(named);
        host.shutdown();
        host.wait().await.into_result()
    }
}
