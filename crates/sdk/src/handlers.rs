//! The built-in task types every `dtc worker` runs:
//!
//! | type | payload | result |
//! |---|---|---|
//! | `noop` | ignored | empty |
//! | `sleep` | a whole number of microseconds, as text (`"100"`) | empty, after that long |
//! | `wordcount` | UTF-8 text | the number of whitespace-separated words, as text |
//! | `fail` | the error to fail with; `fatal:` first fails for good | never succeeds |

use crate::TaskError;
use crate::timer::PreciseTimer;
use bytes::Bytes;
use std::time::Duration;

/// The longest `sleep` accepted (one hour), so that a typo cannot park a slot for ever.
pub const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// Texts longer than this are counted on the blocking pool, off the async runtime; shorter
/// ones take less time to count than a thread hand-off would.
pub const INLINE_WORDCOUNT_BYTES: usize = 64 * 1024;

/// `sleep`: waits for the payload's number of microseconds, with µs precision.
pub async fn sleep(timer: &PreciseTimer, payload: &[u8]) -> Result<Bytes, String> {
    let text =
        std::str::from_utf8(payload).map_err(|_| "sleep's payload must be text".to_string())?;
    let micros: u64 = text.trim().parse().map_err(|_| {
        format!("sleep's payload must be a whole number of microseconds, not {text:?}")
    })?;
    let d = Duration::from_micros(micros);
    if d > MAX_SLEEP {
        return Err(format!(
            "sleep of {micros} µs is longer than the limit of one hour"
        ));
    }
    timer.sleep(d).await;
    Ok(Bytes::new())
}

/// `fail`: fails with the payload as its error, fatally (no more attempts) if it starts
/// with `fatal:`. For demos and tests of retries.
pub fn fail(payload: &[u8]) -> Result<Bytes, TaskError> {
    let text = String::from_utf8_lossy(payload);
    match text.strip_prefix("fatal:") {
        Some(rest) => Err(TaskError::fatal(rest.trim())),
        None => Err(TaskError::retryable(text)),
    }
}

/// `wordcount`: counts the words of a UTF-8 text.
pub async fn wordcount(payload: Bytes) -> Result<Bytes, String> {
    if payload.len() <= INLINE_WORDCOUNT_BYTES {
        return count_words(&payload);
    }
    tokio::task::spawn_blocking(move || count_words(&payload))
        .await
        .map_err(|e| format!("wordcount stopped: {e}"))?
}

/// Counts whitespace-separated words; the answer is the count as decimal text.
pub fn count_words(text: &[u8]) -> Result<Bytes, String> {
    let text = std::str::from_utf8(text)
        .map_err(|e| format!("wordcount's payload must be UTF-8 text: {e}"))?;
    Ok(Bytes::from(text.split_whitespace().count().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_words() {
        assert_eq!(
            count_words(b"the quick  brown\nfox").ok(),
            Some(Bytes::from_static(b"4"))
        );
        assert_eq!(count_words(b"").ok(), Some(Bytes::from_static(b"0")));
        assert!(count_words(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn fail_fails_fatally_only_when_asked() {
        let soft = fail(b"disk full");
        assert_eq!(soft, Err(TaskError::retryable("disk full")));
        let hard = fail(b"fatal: bad input");
        assert_eq!(hard, Err(TaskError::fatal("bad input")));
    }

    #[tokio::test]
    async fn large_texts_are_counted_off_the_runtime() {
        let text = "word ".repeat(INLINE_WORDCOUNT_BYTES);
        assert_eq!(
            wordcount(Bytes::from(text)).await.ok(),
            Some(Bytes::from(INLINE_WORDCOUNT_BYTES.to_string()))
        );
    }

    #[tokio::test]
    async fn sleep_rejects_bad_payloads() -> std::io::Result<()> {
        let timer = PreciseTimer::new();
        assert!(sleep(&timer, b"abc").await.is_err());
        assert!(sleep(&timer, b"999999999999").await.is_err());
        assert!(sleep(&timer, b" 50 ").await.is_ok());
        Ok(())
    }
}
