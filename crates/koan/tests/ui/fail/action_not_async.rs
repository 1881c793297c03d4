#[derive(Default)]
struct Worker;

#[koan::actions]
impl Worker {
    #[action("go")]
    fn go(&self) {}
}

fn main() {}
