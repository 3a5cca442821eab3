fn main() -> std::process::ExitCode {
    drops_host::cli::main()
}
