pub fn run(args: Vec<String>, socket: Option<std::path::PathBuf>) -> u8 {
    let _ = (args, socket);
    super::exit::SOFTWARE
}
