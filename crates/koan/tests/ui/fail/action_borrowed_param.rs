struct Greeter;

#[koan::actions]
impl Greeter {
    #[action]
    async fn greet(&self, name: &str) -> String {
        format!("hello {name}")
    }
}

fn main() {}
