//! JSON text an action reads itself: parameters as they came over a wire, not parsed
//! (nor checked) on the way, read once, by the action, straight into its own type.

use serde::Serialize;
use serde_json::value::RawValue;

/// Parameters given as JSON text, as a transport or a queue receives them: the
/// action reads them straight into its parameter type, and refuses text that is not
/// valid JSON there (`InvalidParameters`, naming the action). Blank text, or `null`,
/// is no parameters.
///
/// Text checked before it is given (a `Box<serde_json::value::RawValue>`) is read
/// the same way; this one saves the check, a read of the whole text, where the
/// action's own read would find the same fault.
///
/// ```
/// use koan::action::JsonText;
/// # use koan::{ActionContext, Actions, Background, BackgroundService, BoxError, Host};
/// # use koan::{Service, ServiceContext, ServiceOptions};
/// # use std::sync::Arc;
/// # struct Calc;
/// # impl Service for Calc {
/// #     type Kind = Background;
/// #     fn options() -> ServiceOptions { ServiceOptions::named("Calc") }
/// #     fn actions(a: &mut Actions<Self>) {
/// #         a.action("double", |_s: Arc<Self>, n: u64, _cx: ActionContext| async move {
/// #             Ok::<_, BoxError>(n * 2)
/// #         });
/// #     }
/// # }
/// # impl BackgroundService for Calc {
/// #     async fn run(&self, cx: ServiceContext) -> Result<(), BoxError> { cx.cancelled().await; Ok(()) }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), koan::Error> {
/// # let host = Host::builder().instance(Calc).build()?.start();
/// # host.started().await?;
/// let calc = host.service("Calc");
/// let out = calc.action("double", JsonText::from(&b"21"[..])).execute().await?;
/// assert_eq!(out.value::<u64>()?, 42);
/// let refused = calc.action("double", JsonText::from(&b"{21"[..])).execute().await;
/// let e = refused.err().expect("not JSON");
/// assert_eq!(e.kind(), koan::error::ErrorKind::InvalidParameters);
/// assert!(e.to_string().contains("not valid JSON"), "{e}");
/// # host.shutdown();
/// # host.wait().await.into_result()
/// # }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct JsonText(Box<[u8]>);

impl JsonText {
    /// The text as given.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// No parameters: blank, or `null`.
    pub(crate) fn is_none(&self) -> bool {
        let text = self.0.trim_ascii();
        text.is_empty() || text == b"null"
    }
}

impl std::fmt::Debug for JsonText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JsonText({})", String::from_utf8_lossy(&self.0))
    }
}

impl From<&[u8]> for JsonText {
    fn from(text: &[u8]) -> Self {
        JsonText(text.into())
    }
}

impl From<Vec<u8>> for JsonText {
    fn from(text: Vec<u8>) -> Self {
        JsonText(text.into_boxed_slice())
    }
}

impl From<String> for JsonText {
    fn from(text: String) -> Self {
        JsonText(text.into_bytes().into_boxed_slice())
    }
}

impl From<Box<RawValue>> for JsonText {
    fn from(raw: Box<RawValue>) -> Self {
        JsonText(Box::<str>::from(raw).into_boxed_bytes())
    }
}

/// As the JSON it holds; text that is not JSON is an error of the serializer.
impl Serialize for JsonText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.is_none() {
            return s.serialize_unit();
        }
        let raw: &RawValue = serde_json::from_slice(&self.0)
            .map_err(|e| serde::ser::Error::custom(format!("not valid JSON: {e}")))?;
        raw.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::JsonText;

    /// Inside another value, the text serializes as the JSON it holds.
    #[test]
    fn json_text_serializes_as_its_json_and_refuses_text_that_is_not() {
        let v = serde_json::to_value(json!({ "p": JsonText::from(br#"{"a": [1, 2]}"#.to_vec()) }));
        assert_eq!(v.ok(), Some(json!({ "p": { "a": [1, 2] } })));
        for blank in [&b""[..], b" \n ", b"null"] {
            let v = serde_json::to_value(JsonText::from(blank));
            assert_eq!(v.ok(), Some(serde_json::Value::Null), "{blank:?}");
        }
        let e = serde_json::to_string(&JsonText::from(&b"{\"a\":"[..]))
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.contains("not valid JSON")),
            "{e:?}"
        );
    }
}
