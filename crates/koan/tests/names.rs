//! Names a host refuses when it is built: a service, action or event name that is
//! empty, a separator alone, over 200 bytes or holding a control character, and an
//! event declared twice. Each was taken (found by a probe): `#[action("")]` built
//! an action no route reaches, `name = ""` a service at `/api/services/`, and two
//! declarations of one event were both listed.

use koan::error::ErrorKind;

/// A service `$ty` with the actions and events `$declare` declares on `a`.
macro_rules! declaring {
    ($ty:ident, |$a:ident| $declare:block) => {
        struct $ty;

        impl koan::Service for $ty {
            type Kind = koan::Background;

            fn options() -> koan::ServiceOptions {
                koan::ServiceOptions::named(stringify!($ty))
            }

            fn actions($a: &mut koan::Actions<Self>) {
                $declare
            }
        }

        impl koan::BackgroundService for $ty {
            async fn run(&self, cx: koan::ServiceContext) -> Result<(), koan::BoxError> {
                cx.cancelled().await;
                Ok(())
            }
        }
    };
}

fn action<S: koan::Service>(a: &mut koan::Actions<S>, name: &str) {
    a.action(
        name,
        |_: std::sync::Arc<S>, n: u32, _cx: koan::ActionContext| async move {
            Ok::<_, koan::BoxError>(n)
        },
    );
}

declaring!(Empty, |a| { action(a, "") });
declaring!(Dash, |a| { action(a, "-") });
declaring!(Bell, |a| { action(a, "ring\u{7}") });
declaring!(Long, |a| { action(a, &"x".repeat(201)) });
declaring!(Fine, |a| {
    action(a, &"x".repeat(200));
    action(a, "add one");
    a.event::<u32>("added");
});
declaring!(TwoEvents, |a| {
    a.event::<u32>("added");
    a.event::<String>("added");
});
declaring!(NoEventName, |a| {
    a.event::<u32>(" ");
});

fn refused<T: koan::Service>(service: T) -> koan::Error {
    match koan::testing::host().instance(service).build() {
        Ok(_) => panic!("`{}` was built", std::any::type_name::<T>()),
        Err(e) => e,
    }
}

#[test]
fn action_names_that_are_no_names_are_refused() {
    for (e, problem) in [
        (refused(Empty), "`` is empty"),
        (refused(Dash), "`-` has no letter or digit"),
        (refused(Bell), "`ring\\u{7}` holds a control character"),
        (
            refused(Long),
            "`xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…` is longer than 200 bytes",
        ),
    ] {
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        assert!(
            e.message().contains(&format!(
                "the action name {problem}; a name needs 1 to 200 bytes"
            )),
            "{e}"
        );
    }
}

#[test]
fn event_names_that_are_no_names_or_twice_declared_are_refused() {
    let e = refused(NoEventName);
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(
        e.message()
            .contains("the event name ` ` has no letter or digit"),
        "{e}"
    );

    let e = refused(TwoEvents);
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(
        e.message()
            .contains("service `TwoEvents` declares event `added` twice"),
        "{e}"
    );
}

#[test]
fn service_names_that_are_no_names_are_refused() {
    for (name, problem) in [
        ("", "`` is empty"),
        (" . ", "` . ` has no letter or digit"),
        ("Tab\tbed", "`Tab\\tbed` holds a control character"),
        ("dup\\\"x", "`dup\\\\\\\"x` holds a backslash"),
        (
            "gnp\u{202E}.exe",
            "`gnp\\u{202e}.exe` holds a bidirectional control character",
        ),
    ] {
        let e = match koan::testing::host().instance_named(name, Fine).build() {
            Ok(_) => panic!("{name:?} was built"),
            Err(e) => e,
        };
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        assert!(
            e.message().contains(&format!("the service name {problem}")),
            "{e}"
        );
    }
}

#[test]
fn names_of_up_to_200_bytes_with_spaces_are_taken() -> anyhow::Result<()> {
    let host = koan::testing::host()
        .instance_named("Résumé mailer", Fine)
        .build()?;
    assert_eq!(host.handle().status("résumé mailer")?.name, "Résumé mailer");
    Ok(())
}
