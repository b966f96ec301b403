fn main() {
    std::process::exit(sipbridge::daemon::main());
}
