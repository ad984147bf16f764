//! Progress bars for long bulk work: on stderr, hidden when stderr is not a terminal.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over input bytes when the size is known, else a spinner counting posts.
pub fn bulk_progress(total_bytes: Option<u64>) -> ProgressBar {
    match total_bytes {
        Some(total) => {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {percent}% {msg} (eta {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        }
        None => {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{elapsed_precise} {spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        }
    }
}

/// "N posts, R posts/s" for a bar's message.
pub fn rate_message(posts: u64, bar: &ProgressBar) -> String {
    let secs = bar.elapsed().as_secs_f64().max(1e-9);
    format!("{posts} posts, {:.0} posts/s", posts as f64 / secs)
}
