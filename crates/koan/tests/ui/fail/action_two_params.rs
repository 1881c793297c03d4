#[derive(Default)]
struct Worker;

#[koan::actions]
impl Worker {
    #[action("go")]
    async fn go(&self, a: u32, b: u32) -> u32 {
        a + b
    }
}

fn main() {}
