//! Temporary Access Pass codes: generated with the operating system's CSPRNG, shown once,
//! stored only as an argon2id hash, verified on a bounded pool of blocking threads.
//!
//! Codes are short and human-typed (8 characters by default, about 47 bits), so NIST SP 800-63B
//! §5.1.2.2 asks for a salted, slow KDF rather than a fast hash: argon2id at the OWASP
//! parameters (m = 19 MiB, t = 2, p = 1). Each verification costs tens of milliseconds of CPU
//! and 19 MiB of memory, so [`Hasher`] bounds how many run at once and how many may wait; a
//! flood is shed with [`HashError::Overloaded`] instead of queueing without bound. Its threads
//! are dedicated and each reuses one argon2 work area: a fresh 19 MiB allocation on a pooled
//! thread is served by `mmap` and page-faulted in on every call, which cost nearly as much as
//! the hash itself (about 11 ms on top of 17 ms, measured for BENCHMARKS.md).
//!
//! May depend on: nothing in this crate.

use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{
    Output, ParamsString, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::Rng;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Characters a code is drawn from: letters and digits without the easily confused
/// `I l O 0 1`, and a few symbols that need no escaping in a URL form or a shell single quote.
pub const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789+-=@%";

/// Longest credential we are willing to hash; longer input is refused before any work
/// (a TAP is at most 48 characters; passwords typed into the same field stay well below this).
pub const MAX_CREDENTIAL_BYTES: usize = 256;

/// Errors of hashing and verification.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Too many verifications are running and waiting; the request is shed.
    #[error("too many passcode verifications in progress; try again shortly")]
    Overloaded,
    /// The stored hash is not a PHC string argon2 can read.
    #[error("stored passcode hash is unreadable: {0}")]
    BadHash(String),
    /// Hashing itself failed (parameters rejected, blocking pool gone).
    #[error("passcode hashing failed: {0}")]
    Internal(String),
}

/// Whether every character of `credential` is in [`ALPHABET`] (as every code's is).
pub fn in_alphabet(credential: &str) -> bool {
    credential.bytes().all(|b| ALPHABET.contains(&b))
}

/// Generates a code of `length` characters from [`ALPHABET`] with the OS CSPRNG.
pub fn generate(length: u32) -> Zeroizing<String> {
    let mut rng = OsRng;
    let mut code = Zeroizing::new(String::with_capacity(length as usize));
    for _ in 0..length {
        let i = rng.gen_range(0..ALPHABET.len());
        code.push(char::from(ALPHABET[i]));
    }
    code
}

/// The argon2id instance with the parameters tapd uses for every new hash.
fn argon2() -> Result<Argon2<'static>, HashError> {
    let params = Params::new(19_456, 2, 1, None).map_err(|e| HashError::Internal(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `code` synchronously (argon2id, random 16-byte salt) into a PHC string.
pub fn hash_blocking(code: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()?
        .hash_password(code.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Internal(e.to_string()))
}

/// Hashes `code` like [`hash_blocking`], using `memory` as the argon2 work area (grown to
/// tapd's parameters when smaller), so a hashing thread allocates its 19 MiB once. A fresh
/// work area per hash is not just slower: glibc's allocator keeps each freed 19 MiB area in
/// whichever arena the thread used, and issuing a hundred TAPs grew the daemon to 400 MB.
pub fn hash_with_memory(code: &str, memory: &mut Vec<Block>) -> Result<String, HashError> {
    let internal = |e: argon2::password_hash::Error| HashError::Internal(e.to_string());
    let argon2 = argon2()?;
    let params = argon2.params().clone();
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buffer = [0u8; 64];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_buffer)
        .map_err(internal)?;
    let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let mut output = Zeroizing::new(vec![0u8; output_len]);
    argon2
        .hash_password_into_with_memory(
            code.as_bytes(),
            salt_bytes,
            &mut output,
            &mut memory[..blocks],
        )
        .map_err(|e| HashError::Internal(e.to_string()))?;
    let hash = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(internal)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&output).map_err(internal)?),
    };
    Ok(hash.to_string())
}

/// Verifies `code` against a PHC hash synchronously, in constant time for a given hash.
pub fn verify_blocking(code: &str, phc: &str) -> Result<bool, HashError> {
    if code.len() > MAX_CREDENTIAL_BYTES {
        return Ok(false);
    }
    let parsed = PasswordHash::new(phc).map_err(|e| HashError::BadHash(e.to_string()))?;
    match argon2()?.verify_password(code.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(HashError::BadHash(e.to_string())),
    }
}

/// The largest argon2 work area kept for reuse: twice tapd's own (a stored hash with bigger
/// parameters still verifies, with a one-off allocation).
const MAX_REUSED_BLOCKS: usize = 2 * 19_456;

/// Verifies `code` against a PHC hash using `memory` as the argon2 work area (grown when the
/// hash's parameters need more). Same result as [`verify_blocking`]; the comparison is
/// constant-time.
pub fn verify_with_memory(
    code: &str,
    phc: &str,
    memory: &mut Vec<Block>,
) -> Result<bool, HashError> {
    if code.len() > MAX_CREDENTIAL_BYTES {
        return Ok(false);
    }
    let bad = |e: argon2::password_hash::Error| HashError::BadHash(e.to_string());
    let parsed = PasswordHash::new(phc).map_err(bad)?;
    if parsed.algorithm != argon2::ARGON2ID_IDENT {
        return Err(HashError::BadHash(format!(
            "algorithm {} is not argon2id",
            parsed.algorithm
        )));
    }
    let params = Params::try_from(&parsed).map_err(bad)?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).map_err(|e| HashError::BadHash(e.to_string()))?,
        None => Version::V0x13,
    };
    let salt = parsed
        .salt
        .ok_or_else(|| HashError::BadHash("no salt".to_owned()))?;
    let mut salt_buffer = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_buffer).map_err(bad)?;
    let expected = parsed
        .hash
        .ok_or_else(|| HashError::BadHash("no hash".to_owned()))?;
    let blocks = params.block_count();
    let mut once = Vec::new();
    let area = if blocks <= MAX_REUSED_BLOCKS {
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        &mut memory[..blocks]
    } else {
        once.resize(blocks, Block::default());
        &mut once[..]
    };
    let mut output = Zeroizing::new(vec![0u8; expected.len()]);
    Argon2::new(Algorithm::Argon2id, version, params)
        .hash_password_into_with_memory(code.as_bytes(), salt, &mut output, area)
        .map_err(|e| HashError::BadHash(e.to_string()))?;
    Ok(expected.as_bytes().ct_eq(&output).into())
}

/// How long a hashing thread keeps its 19 MiB work area without work: long enough that a
/// burst of verifications reuses it, short enough that an idle daemon doesn't hold it.
const AREA_IDLE_RELEASE: std::time::Duration = std::time::Duration::from_secs(2);

/// A unit of argon2 work, run on a worker thread with that thread's work area.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// Runs argon2 work on `max_concurrent` dedicated threads, with at most `max_queued` jobs
/// waiting; cheap to clone. Each thread keeps its own argon2 work area while it has work (and
/// [`AREA_IDLE_RELEASE`] after), so memory stays at most `max_concurrent` × 19 MiB, and goes from one job to the next without waiting to be
/// scheduled again (a busy pool keeps its cores). The threads end when the last clone is
/// dropped.
#[derive(Clone, Debug)]
pub struct Hasher {
    jobs: std::sync::mpsc::SyncSender<Job>,
    /// One permit per job running or waiting: `max_concurrent + max_queued`.
    admission: Arc<tokio::sync::Semaphore>,
    /// A hash of a random code, verified against when there is no TAP so that "no such TAP"
    /// costs the same time as "wrong code".
    decoy: Arc<str>,
}

impl Hasher {
    /// A pool running at most `max_concurrent` hashes with at most `max_queued` waiting.
    pub fn new(max_concurrent: usize, max_queued: usize) -> Result<Self, HashError> {
        let max_concurrent = max_concurrent.max(1);
        let admitted = max_concurrent + max_queued;
        // Admission is counted by the semaphore, so the channel never refuses a job itself.
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(admitted);
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for index in 0..max_concurrent {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || {
                    let mut area = Vec::new();
                    loop {
                        // One idle thread waits on the queue, the others on the lock.
                        let job = queue
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .recv_timeout(AREA_IDLE_RELEASE);
                        match job {
                            Ok(job) => job(&mut area),
                            // Idle: give the work area back to the system until needed.
                            Err(RecvTimeoutError::Timeout) => area = Vec::new(),
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                })
                .map_err(|e| HashError::Internal(format!("starting an argon2 thread: {e}")))?;
        }
        let decoy = hash_blocking(&generate(16))?;
        Ok(Hasher {
            jobs,
            admission: Arc::new(tokio::sync::Semaphore::new(admitted)),
            decoy: decoy.into(),
        })
    }

    async fn run<T, F>(&self, work: F) -> Result<T, HashError>
    where
        F: FnOnce(&mut Vec<Block>) -> Result<T, HashError> + Send + 'static,
        T: Send + 'static,
    {
        let admitted = self
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| HashError::Overloaded)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |area| {
            let result = work(area);
            drop(admitted);
            // The caller may have gone away; the work is done either way.
            let _ = reply.send(result);
        });
        self.jobs.try_send(job).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(_) => HashError::Overloaded,
            std::sync::mpsc::TrySendError::Disconnected(_) => {
                HashError::Internal("the argon2 threads have stopped".to_owned())
            }
        })?;
        answer
            .await
            .map_err(|_| HashError::Internal("an argon2 thread dropped its job".to_owned()))?
    }

    /// Hashes a new code.
    pub async fn hash(&self, code: Zeroizing<String>) -> Result<String, HashError> {
        self.run(move |area| hash_with_memory(&code, area)).await
    }

    /// Verifies `credential` against `phc`; with `None` it verifies against a decoy hash and
    /// returns false, taking the same time as a real mismatch.
    pub async fn verify(
        &self,
        credential: Zeroizing<String>,
        phc: Option<String>,
    ) -> Result<bool, HashError> {
        let decoy = self.decoy.clone();
        self.run(move |area| match phc {
            Some(phc) => verify_with_memory(&credential, &phc, area),
            None => verify_with_memory(&credential, &decoy, area).map(|_| false),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn generated_codes_have_the_length_and_alphabet() {
        for len in [8u32, 12, 48] {
            let code = generate(len);
            assert_eq!(code.chars().count(), len as usize);
            assert!(code.bytes().all(|b| ALPHABET.contains(&b)));
        }
        assert_ne!(*generate(16), *generate(16));
    }

    #[test]
    fn hashing_with_a_reused_area_matches_the_library() {
        let mut area = Vec::new();
        let first = hash_with_memory("Code-1234", &mut area).unwrap();
        let second = hash_with_memory("Code-1234", &mut area).unwrap();
        assert_ne!(first, second, "a fresh salt each time");
        for phc in [&first, &second] {
            assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
            // The library's own verifier accepts it, and only for the right code.
            assert!(verify_blocking("Code-1234", phc).unwrap());
            assert!(!verify_blocking("Code-1235", phc).unwrap());
        }
        assert_eq!(
            area.len(),
            19_456,
            "the area was allocated once, at tapd's size"
        );
    }

    #[test]
    fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let phc = hash_blocking("s3cret+Code").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_blocking("s3cret+Code", &phc).unwrap());
        assert!(!verify_blocking("s3cret+Codf", &phc).unwrap());
        assert!(!verify_blocking(&"x".repeat(MAX_CREDENTIAL_BYTES + 1), &phc).unwrap());
        assert!(verify_blocking("x", "not a hash").is_err());
        // The reusable-memory path agrees, on a fresh and on a used work area.
        let mut area = Vec::new();
        assert!(verify_with_memory("s3cret+Code", &phc, &mut area).unwrap());
        assert!(!verify_with_memory("s3cret+Codf", &phc, &mut area).unwrap());
        assert!(verify_with_memory("s3cret+Code", &phc, &mut area).unwrap());
        assert_eq!(area.len(), 19_456);
        assert!(
            !verify_with_memory(&"x".repeat(MAX_CREDENTIAL_BYTES + 1), &phc, &mut area).unwrap()
        );
        assert!(verify_with_memory("x", "not a hash", &mut area).is_err());
        let argon2i = "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$dGVzdHRlc3R0ZXN0dGVzdA";
        assert!(verify_with_memory("x", argon2i, &mut area).is_err());
    }

    #[tokio::test]
    async fn pool_sheds_beyond_its_queue() {
        let hasher = Hasher::new(1, 0).unwrap();
        let phc = hasher.hash(Zeroizing::new("abc".into())).await.unwrap();
        let slow = {
            let h = hasher.clone();
            let p = phc.clone();
            tokio::spawn(async move { h.verify(Zeroizing::new("abc".into()), Some(p)).await })
        };
        tokio::task::yield_now().await;
        // While the only slot is busy and no queue is allowed, another call may be shed.
        let second = hasher.verify(Zeroizing::new("abc".into()), Some(phc)).await;
        assert!(matches!(second, Ok(true) | Err(HashError::Overloaded)));
        assert!(slow.await.unwrap().unwrap());
        assert!(!hasher
            .verify(Zeroizing::new("abc".into()), None)
            .await
            .unwrap());
    }
}
