//! `meridian-jepsen`: see [`meridian_jepsen::cli`].
fn main() {
    std::process::exit(meridian_jepsen::cli::main_with(std::env::args_os()));
}
