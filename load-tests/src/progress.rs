//! Progress bars on standard error (hidden when it is not a terminal) and notes for people.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar counting `len` things.
pub fn counter(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {msg:<36} [{bar:30}] {pos}/{len} ({per_sec}, {elapsed})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A bar counting seconds of a timed phase; its message shows live figures.
pub fn timer(secs: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(secs), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {prefix:<12} [{bar:30}] {pos}/{len} s  {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Tells people what is happening, on standard error.
pub fn note(message: &str) {
    eprintln!("lianxin-load: {message}");
}
