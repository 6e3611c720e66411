use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = agent_ledger::cli::Cli::parse();
    match agent_ledger::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
