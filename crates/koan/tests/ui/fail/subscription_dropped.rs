#![deny(unused_must_use)]

async fn listen(host: koan::HostHandle) -> koan::Result<()> {
    host.events().on("Tick").handle(|n: u32| async move { println!("{n}") }).subscribe().await?;
    Ok(())
}

fn main() {
    let _ = listen;
}
