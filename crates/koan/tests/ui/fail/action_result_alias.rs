// A `Result` under another name: its `Err` was answered as a success (found by a
// probe); now a compile error pointing at the return type, saying what to write.

#[derive(Debug, serde::Serialize)]
struct AppError(String);

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AppError {}

type AppOutcome<T> = Result<T, AppError>;

/// A struct that only has `Result` in its name is a value, as before.
#[derive(serde::Serialize, schemars::JsonSchema)]
struct SearchResult {
    hits: u32,
}

#[koan::service]
#[derive(Default)]
struct Worker;

impl koan::BackgroundService for Worker {
    async fn run(&self, _cx: koan::ServiceContext) -> Result<(), koan::BoxError> {
        Ok(())
    }
}

#[koan::actions]
impl Worker {
    #[action("check")]
    async fn check(&self, fail: bool) -> AppOutcome<u32> {
        if fail {
            return Err(AppError("boom".into()));
        }
        Ok(1)
    }

    #[action("search")]
    async fn search(&self) -> SearchResult {
        SearchResult { hits: 1 }
    }
}

fn main() {}
