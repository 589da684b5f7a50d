//! Pushes over git's smart HTTP protocol from the process itself, sending the pack the batch
//! already wrote.
//!
//! `git push` spends most of its own time on the client side enumerating the objects of the new
//! commits (it walks every tree they touch) and copying them into a new pack — the very pack
//! [`crate::pack::Batch`] wrote a moment before. Here the push is the protocol's two requests:
//! `GET info/refs?service=git-receive-pack` for the advertisement, then `POST git-receive-pack`
//! with one update command and the batch's pack, which is self-contained (every delta's base is
//! in it) and holds every object the new commits add to the expected tip.
//!
//! When this pusher itself set the ref to the expected tip moments ago (a writer under load
//! pushes batch after batch), the advertisement is skipped: the capabilities are the last
//! advertisement's, and the POST goes alone. That saves the remote starting a second
//! `receive-pack` per push. If the remote refuses that update, the advertisement is asked for
//! then: a ref that moved answers `[rejected] (stale info)`, as a push that asked first would
//! have; a refusal of a ref still where this pusher left it stands, without sending again.
//!
//! The compare-and-swap is the remote's: the command names the old value and `receive-pack`
//! updates the ref only if it still holds it. Anything this client does not expect before the
//! pack is sent — a redirect, an unusual answer, a missing capability, a TLS or credentials
//! problem — hands the push to `git push`, which speaks every variant and words errors the way
//! the rest of tug understands them. After the pack is sent, whether it landed is unknown when
//! the answer is lost, as with `git push`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::env::GitEnv;
use crate::error::GitError;
use crate::object::ObjectId;
use crate::reject::{PushOutcome, Rejection};

const ZERO_ID: &str = "0000000000000000000000000000000000000000";

/// How long a ref this pusher updated is taken to still be where it left it: under a steady
/// load the next push follows within moments; after a pause, another writer may have pushed.
const KNOWN_FOR: Duration = Duration::from_secs(10);

/// What the in-process push did.
pub(crate) enum HttpPush {
    /// The push ran; this is its outcome.
    Done(Result<PushOutcome, GitError>),
    /// Nothing was sent that could change the remote: `git push` should do it, for this reason.
    Fallback(String),
}

/// One ref update: `refname` from `expected_old` (absent when `None`) to `new`, with `pack`
/// holding every object `new` adds.
pub(crate) struct Update<'a> {
    pub(crate) refname: &'a str,
    pub(crate) new: ObjectId,
    pub(crate) expected_old: Option<ObjectId>,
    pub(crate) pack: &'a Path,
    pub(crate) timeout: Duration,
}

/// The smart-HTTP pusher of one mirror.
pub(crate) struct HttpPusher {
    /// The repository URL without a trailing slash.
    base: String,
    client: OnceLock<Result<reqwest::blocking::Client, String>>,
    /// Set when this remote needs `git push` (TLS it alone can verify, a protocol variant):
    /// asking again on every push would only add a round trip.
    git_only: AtomicBool,
    known: Mutex<Option<Known>>,
}

impl HttpPusher {
    /// A pusher for `url` when it is an HTTP(S) URL.
    pub(crate) fn for_url(url: &str) -> Option<Self> {
        let lower = url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return None;
        }
        Some(Self {
            base: url.trim_end_matches('/').to_owned(),
            client: OnceLock::new(),
            git_only: AtomicBool::new(false),
            known: Mutex::new(None),
        })
    }

    fn client(&self) -> Result<&reqwest::blocking::Client, String> {
        self.client
            .get_or_init(|| {
                reqwest::blocking::Client::builder()
                    // Forges route smart-HTTP requests by a git-like agent.
                    .user_agent(concat!("git/tug-", env!("CARGO_PKG_VERSION")))
                    // git follows a redirect of the first request only; leave those to it.
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Makes `update` if the remote still has the ref at its expected value.
    pub(crate) fn push(&self, env: &GitEnv, update: &Update<'_>) -> HttpPush {
        if self.git_only.load(Ordering::Relaxed) {
            return HttpPush::Fallback("this remote is pushed to with git".to_owned());
        }
        match self.try_push(env, update) {
            Ok(done) => HttpPush::Done(done),
            Err(Before { reason, lasting }) => {
                if lasting {
                    self.git_only.store(true, Ordering::Relaxed);
                }
                HttpPush::Fallback(env.redact(&reason))
            }
        }
    }

    fn try_push(
        &self,
        env: &GitEnv,
        update: &Update<'_>,
    ) -> Result<Result<PushOutcome, GitError>, Before> {
        let client = self.client().map_err(Before::lasting)?;
        let Some(offer) = self.known_offer(update) else {
            let (offer, current) = self.advertise(client, env, update)?;
            if current != update.expected_old {
                return Ok(Ok(stale_info()));
            }
            return self.send_and_remember(client, env, update, &offer);
        };
        // The ref most likely still holds what this pusher sent it moments ago: the pack goes
        // without asking first, and the remote's compare-and-swap still guards the update.
        let sent = self.send(client, env, update, &offer);
        match sent {
            Ok(Ok(PushOutcome::Accepted)) => {
                self.pushed(update);
                return sent;
            }
            // Whether it landed is unknown: nothing more is sent.
            Ok(Err(GitError::Unreachable { .. })) => {
                self.forget(update.refname);
                return sent;
            }
            _ => self.forget(update.refname),
        }
        // Refused, or stopped before the pack went: the advertisement tells whether the ref
        // moved, in the words a push that asked first gets.
        let (offer, current) = self.advertise(client, env, update)?;
        if current != update.expected_old {
            return Ok(Ok(stale_info()));
        }
        match sent {
            // The ref is where this pusher left it: the refusal stands, and is not sent again.
            Ok(refused) => Ok(refused),
            Err(_) => self.send_and_remember(client, env, update, &offer),
        }
    }

    /// Asks the remote for its refs and capabilities: what a push offers it, and where
    /// `update`'s ref is.
    fn advertise(
        &self,
        client: &reqwest::blocking::Client,
        env: &GitEnv,
        update: &Update<'_>,
    ) -> Result<(Offer, Option<ObjectId>), Before> {
        let response = with_credentials(
            env,
            client.get(format!("{}/info/refs?service=git-receive-pack", self.base)),
        )
        .timeout(update.timeout)
        .send()
        .map_err(|e| {
            // A connection problem is git's to report (and retry); a TLS failure is lasting.
            let lasting = !(e.is_connect() || e.is_timeout()) || tls_failure(&e);
            Before {
                reason: format!("advertisement: {e}"),
                lasting,
            }
        })?;
        expect_answer(&response, "application/x-git-receive-pack-advertisement")?;
        let advertisement = response
            .bytes()
            .map_err(|e| Before::once(format!("advertisement: {e}")))?;
        let advertised = Advertisement::parse(&advertisement).map_err(Before::lasting)?;
        for needed in ["report-status", "ofs-delta"] {
            if !advertised.has(needed) {
                return Err(Before::lasting(format!(
                    "the remote does not offer the {needed} capability"
                )));
            }
        }
        if advertised
            .value("object-format")
            .is_some_and(|format| format != "sha1")
        {
            return Err(Before::lasting("the remote uses another object format"));
        }
        let side_band = advertised.has("side-band-64k");
        let mut capabilities = String::from("report-status");
        if side_band {
            capabilities.push_str(" side-band-64k");
        }
        if advertised.has("quiet") {
            capabilities.push_str(" quiet");
        }
        let _ = write!(capabilities, " agent=tug/{}", env!("CARGO_PKG_VERSION"));
        let offer = Offer {
            capabilities,
            side_band,
        };
        Ok((offer, advertised.tip(update.refname)))
    }

    fn send_and_remember(
        &self,
        client: &reqwest::blocking::Client,
        env: &GitEnv,
        update: &Update<'_>,
        offer: &Offer,
    ) -> Result<Result<PushOutcome, GitError>, Before> {
        let sent = self.send(client, env, update, offer);
        match &sent {
            Ok(Ok(PushOutcome::Accepted)) => {
                self.remember(offer.clone(), update);
            }
            _ => self.forget(update.refname),
        }
        sent
    }

    /// Sends the update command and the pack.
    fn send(
        &self,
        client: &reqwest::blocking::Client,
        env: &GitEnv,
        update: &Update<'_>,
        offer: &Offer,
    ) -> Result<Result<PushOutcome, GitError>, Before> {
        let &Update {
            refname,
            new,
            expected_old,
            pack,
            timeout,
        } = update;
        let pack = std::fs::read(pack)
            .map_err(|e| Before::once(format!("cannot read {}: {e}", pack.display())))?;
        let old = expected_old.map_or_else(|| ZERO_ID.to_owned(), |old| old.to_hex());
        let mut body = Vec::with_capacity(pack.len() + 200);
        push_pkt_line(
            &mut body,
            format!("{old} {new} {refname}\0{}\n", offer.capabilities).as_bytes(),
        );
        body.extend_from_slice(b"0000");
        body.extend_from_slice(&pack);

        let url = env.redact(&self.base);
        // From here on the remote may take the pack: an error is an unknown outcome.
        let unknown = |detail: String| GitError::Unreachable {
            op: "push",
            url: url.clone(),
            detail: env.redact(&detail),
        };
        let response =
            match with_credentials(env, client.post(format!("{}/git-receive-pack", self.base)))
                .header("Content-Type", "application/x-git-receive-pack-request")
                .header("Accept", "application/x-git-receive-pack-result")
                .timeout(timeout)
                .body(body)
                .send()
            {
                Ok(response) => response,
                Err(e) => return Ok(Err(unknown(e.to_string()))),
            };
        let status = response.status();
        if status.is_client_error() {
            // Refused by the HTTP layer (a proxy's body limit, credentials, a disabled
            // service) before any receive-pack ran: git push may pass, or says why not.
            return Err(Before::once(format!("git-receive-pack: HTTP {status}")));
        }
        let answer = match response.bytes() {
            Ok(answer) => answer,
            Err(e) => return Ok(Err(unknown(e.to_string()))),
        };
        if !status.is_success() {
            // A server error, or an answer of another kind: whether the pack landed is unknown.
            let text = String::from_utf8_lossy(&answer);
            return Ok(Err(unknown(format!("HTTP {status}: {}", text.trim()))));
        }
        Ok(read_report(&answer, offer.side_band, refname).map_or_else(
            |detail| Err(unknown(detail)),
            |report| report.outcome(env, &url, refname),
        ))
    }

    /// What to offer when `update` may go without an advertisement: its ref was pushed to
    /// `expected_old` by this pusher, recently.
    fn known_offer(&self, update: &Update<'_>) -> Option<Offer> {
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let known = known.as_ref()?;
        let &(tip, at) = known.tips.get(update.refname)?;
        (Some(tip) == update.expected_old && at.elapsed() < KNOWN_FOR).then(|| known.offer.clone())
    }

    fn remember(&self, offer: Offer, update: &Update<'_>) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let known = known.get_or_insert_with(|| Known {
            offer: offer.clone(),
            tips: HashMap::new(),
        });
        known.offer = offer;
        known
            .tips
            .insert(update.refname.to_owned(), (update.new, Instant::now()));
    }

    fn pushed(&self, update: &Update<'_>) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = known.as_mut() {
            known
                .tips
                .insert(update.refname.to_owned(), (update.new, Instant::now()));
        }
    }

    fn forget(&self, refname: &str) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = known.as_mut() {
            known.tips.remove(refname);
        }
    }
}

/// What `git push --force-with-lease` says when the ref is not at the expected value.
fn stale_info() -> PushOutcome {
    PushOutcome::Moved("[rejected] (stale info)".to_owned())
}

fn with_credentials(
    env: &GitEnv,
    request: reqwest::blocking::RequestBuilder,
) -> reqwest::blocking::RequestBuilder {
    match env.http_credentials() {
        Some((username, password)) => request.basic_auth(username, Some(password.expose())),
        None => request,
    }
}

/// The capabilities a push asks the remote for, from its advertisement.
#[derive(Clone)]
struct Offer {
    capabilities: String,
    side_band: bool,
}

/// What the last advertisement and the pushes since told of the remote.
struct Known {
    offer: Offer,
    /// Per ref, what this pusher last set it to, and when.
    tips: HashMap<String, (ObjectId, Instant)>,
}

/// Why the in-process push stopped before sending anything; `lasting` when the next push would
/// stop for the same reason.
struct Before {
    reason: String,
    lasting: bool,
}

impl Before {
    fn once(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            lasting: false,
        }
    }

    fn lasting(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            lasting: true,
        }
    }
}

fn tls_failure(error: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = source {
        let text = e.to_string().to_ascii_lowercase();
        if text.contains("certificate") || text.contains("tls") {
            return true;
        }
        source = e.source();
    }
    false
}

fn expect_answer(response: &reqwest::blocking::Response, content_type: &str) -> Result<(), Before> {
    let status = response.status();
    if !status.is_success() {
        // Credentials (401/403), a missing repository (404), a redirect: git words these.
        return Err(Before {
            reason: format!("advertisement: HTTP {status}"),
            lasting: status.is_redirection(),
        });
    }
    let found = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if found != content_type {
        return Err(Before::lasting(format!(
            "advertisement: content type {found:?}, not {content_type}"
        )));
    }
    Ok(())
}

/// The refs and capabilities `receive-pack` advertises.
#[derive(Debug, Default)]
struct Advertisement {
    refs: Vec<(String, ObjectId)>,
    capabilities: Vec<String>,
}

impl Advertisement {
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut lines = PktLines::new(bytes);
        let mut advertised = Advertisement::default();
        let mut first = lines.next().transpose()?;
        // The smart-HTTP preamble, then a flush; some servers leave both out.
        if let Some(Some(line)) = &first
            && line.starts_with(b"# service=")
        {
            if lines.next().transpose()? != Some(None) {
                return Err("advertisement: no flush after the service line".to_owned());
            }
            first = lines.next().transpose()?;
        }
        let mut line = first;
        let mut is_first = true;
        while let Some(Some(payload)) = line {
            let payload = payload.strip_suffix(b"\n").unwrap_or(payload);
            let (reference, capabilities) = match payload.iter().position(|&b| b == 0) {
                Some(nul) => (&payload[..nul], Some(&payload[nul + 1..])),
                None => (payload, None),
            };
            if let Some(capabilities) = capabilities.filter(|_| is_first) {
                advertised.capabilities = String::from_utf8_lossy(capabilities)
                    .split(' ')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            is_first = false;
            let text = String::from_utf8_lossy(reference);
            let (id, name) = text
                .split_once(' ')
                .ok_or_else(|| format!("advertisement: unexpected line {text:?}"))?;
            let id = ObjectId::from_hex(id)
                .ok_or_else(|| format!("advertisement: unexpected object id in {text:?}"))?;
            if name != "capabilities^{}" && !name.ends_with("^{}") {
                advertised.refs.push((name.to_owned(), id));
            }
            line = lines.next().transpose()?;
        }
        Ok(advertised)
    }

    fn tip(&self, refname: &str) -> Option<ObjectId> {
        self.refs
            .iter()
            .find(|(name, _)| name == refname)
            .map(|(_, id)| *id)
    }

    fn has(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }

    fn value(&self, capability: &str) -> Option<&str> {
        self.capabilities
            .iter()
            .find_map(|c| c.strip_prefix(capability)?.strip_prefix('='))
    }
}

/// What `receive-pack` reported.
#[derive(Debug, PartialEq, Eq)]
struct Report {
    /// `ok`, or why the pack was not taken.
    unpack: String,
    /// `None` for `ok`; the reason of an `ng`.
    refused: Option<String>,
    /// What the remote printed on the progress channel (hooks' messages among it).
    messages: String,
}

impl Report {
    fn outcome(&self, env: &GitEnv, url: &str, refname: &str) -> Result<PushOutcome, GitError> {
        let branch = refname.trim_start_matches("refs/heads/").to_owned();
        let messages = env.redact(self.messages.trim());
        if self.unpack != "ok" {
            return Err(GitError::PushRejected {
                url: url.to_owned(),
                branch,
                reason: join_reason(&format!("unpack failed: {}", self.unpack), &messages),
            });
        }
        let Some(reason) = &self.refused else {
            return Ok(PushOutcome::Accepted);
        };
        // In the words `git push --porcelain` uses, which the classification reads.
        let summary = env.redact(&format!("[remote rejected] ({reason})"));
        match crate::reject::classify(&summary, &messages) {
            Rejection::Moved => Ok(PushOutcome::Moved(summary)),
            Rejection::Refused => Err(GitError::PushRejected {
                url: url.to_owned(),
                branch,
                reason: join_reason(&summary, &messages),
            }),
        }
    }
}

fn join_reason(summary: &str, messages: &str) -> String {
    if messages.is_empty() {
        summary.to_owned()
    } else {
        format!("{summary}; {messages}")
    }
}

/// Reads the answer to a push: the status report, demultiplexed from the side band when one
/// was asked for. An error is an answer this client cannot read.
fn read_report(answer: &[u8], side_band: bool, refname: &str) -> Result<Report, String> {
    let mut report_bytes = Vec::new();
    let mut messages = String::new();
    if side_band {
        for line in PktLines::new(answer) {
            let Some(payload) = line? else {
                break;
            };
            let (band, data) = payload
                .split_first()
                .ok_or_else(|| "empty side-band packet".to_owned())?;
            match band {
                1 => report_bytes.extend_from_slice(data),
                2 => messages.push_str(&String::from_utf8_lossy(data)),
                3 => {
                    return Err(format!(
                        "the remote failed: {}",
                        String::from_utf8_lossy(data).trim()
                    ));
                }
                other => return Err(format!("unknown side band {other}")),
            }
        }
    } else {
        report_bytes.extend_from_slice(answer);
    }
    let mut unpack = None;
    let mut refused = None;
    let mut found = false;
    for line in PktLines::new(&report_bytes) {
        let Some(payload) = line? else {
            break;
        };
        let text = String::from_utf8_lossy(payload);
        let text = text.trim_end_matches('\n');
        if let Some(rest) = text.strip_prefix("unpack ") {
            unpack = Some(rest.to_owned());
        } else if let Some(name) = text.strip_prefix("ok ") {
            found |= name == refname;
        } else if let Some(rest) = text.strip_prefix("ng ") {
            let (name, reason) = rest.split_once(' ').unwrap_or((rest, "refused"));
            if name == refname {
                found = true;
                refused = Some(reason.to_owned());
            }
        }
    }
    let unpack = unpack.ok_or_else(|| {
        let said = messages.trim();
        if said.is_empty() {
            "no status report in the answer".to_owned()
        } else {
            format!("no status report in the answer; the remote said: {said}")
        }
    })?;
    if unpack == "ok" && !found {
        return Err(format!("the status report does not mention {refname}"));
    }
    Ok(Report {
        unpack,
        refused,
        messages,
    })
}

fn push_pkt_line(out: &mut Vec<u8>, payload: &[u8]) {
    let _ = write!(HexLen(out), "{:04x}", payload.len() + 4);
    out.extend_from_slice(payload);
}

struct HexLen<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for HexLen<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// pkt-lines of a buffer: `Some(payload)` for data, `None` for a flush.
struct PktLines<'a> {
    rest: &'a [u8],
}

impl<'a> PktLines<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }
}

impl<'a> Iterator for PktLines<'a> {
    type Item = Result<Option<&'a [u8]>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some(length) = self
            .rest
            .get(..4)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| usize::from_str_radix(hex, 16).ok())
        else {
            self.rest = &[];
            return Some(Err("malformed pkt-line length".to_owned()));
        };
        match length {
            // flush, delimiter and response-end packets carry nothing.
            0..=2 => {
                self.rest = &self.rest[4..];
                Some(Ok(None))
            }
            3 => {
                self.rest = &[];
                Some(Err("malformed pkt-line length".to_owned()))
            }
            _ => {
                let Some(payload) = self.rest.get(4..length) else {
                    self.rest = &[];
                    return Some(Err("truncated pkt-line".to_owned()));
                };
                self.rest = &self.rest[length..];
                Some(Ok(Some(payload)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_pkt_line(&mut out, payload);
        out
    }

    #[test]
    fn advertisements_give_tips_and_capabilities() {
        let main = "1111111111111111111111111111111111111111";
        let mut bytes = pkt(b"# service=git-receive-pack\n");
        bytes.extend_from_slice(b"0000");
        bytes.extend(pkt(
            format!("{main} refs/heads/main\0report-status ofs-delta side-band-64k object-format=sha1 agent=git/2.47\n").as_bytes(),
        ));
        bytes.extend(pkt(format!("{main} refs/tags/v1\n").as_bytes()));
        bytes.extend_from_slice(b"0000");
        let advertised = Advertisement::parse(&bytes).unwrap();
        assert_eq!(advertised.tip("refs/heads/main"), ObjectId::from_hex(main));
        assert_eq!(advertised.tip("refs/heads/other"), None);
        assert!(advertised.has("report-status") && advertised.has("side-band-64k"));
        assert!(!advertised.has("atomic"));
        assert_eq!(advertised.value("object-format"), Some("sha1"));

        // An empty repository advertises its capabilities on a placeholder.
        let mut empty =
            pkt(format!("{ZERO_ID} capabilities^{{}}\0report-status ofs-delta\n").as_bytes());
        empty.extend_from_slice(b"0000");
        let advertised = Advertisement::parse(&empty).unwrap();
        assert!(advertised.refs.is_empty());
        assert!(advertised.has("ofs-delta"));
    }

    /// Answers one connection per canned answer, each after reading the request whole; gives
    /// the listener back when done.
    fn serve(answers: Vec<Vec<u8>>) -> (u16, std::thread::JoinHandle<std::net::TcpListener>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for answer in answers {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap();
                    }
                    if line.trim().is_empty() {
                        break;
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                reader.get_mut().write_all(&answer).unwrap();
            }
            listener
        });
        (port, server)
    }

    fn http_answer(content_type: &str, status: &str, body: &[u8]) -> Vec<u8> {
        let mut answer = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(body);
        answer
    }

    fn test_update(pack: &Path) -> Update<'_> {
        Update {
            refname: "refs/heads/main",
            new: ObjectId([1; 20]),
            expected_old: None,
            pack,
            timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_push_refused_by_the_http_layer_goes_to_git_push_and_the_next_one_asks_again() {
        let mut advertisement = pkt(b"# service=git-receive-pack\n");
        advertisement.extend_from_slice(b"0000");
        advertisement.extend(pkt(format!(
            "{ZERO_ID} capabilities^{{}}\0report-status ofs-delta\n"
        )
        .as_bytes()));
        advertisement.extend_from_slice(b"0000");
        let advertised = "application/x-git-receive-pack-advertisement";
        let mut moved = pkt(b"# service=git-receive-pack\n");
        moved.extend_from_slice(b"0000");
        moved.extend(pkt(format!(
            "{} refs/heads/main\0report-status ofs-delta\n",
            "2".repeat(40)
        )
        .as_bytes()));
        moved.extend_from_slice(b"0000");
        // A proxy's body limit refuses the pack before any receive-pack sees it.
        let (port, server) = serve(vec![
            http_answer(advertised, "200 OK", &advertisement),
            http_answer("text/html", "413 Request Entity Too Large", b"too large"),
            http_answer(advertised, "200 OK", &moved),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let env = GitEnv::for_tests(dir.path());
        let pack = dir.path().join("batch.pack");
        std::fs::write(&pack, b"PACK").unwrap();
        let pusher = HttpPusher::for_url(&format!("http://127.0.0.1:{port}/repo.git")).unwrap();

        let HttpPush::Fallback(reason) = pusher.push(&env, &test_update(&pack)) else {
            panic!("a refused pack taken for an answer")
        };
        assert!(reason.contains("413"), "{reason}");
        // Not for good: the next push asks the remote, which has moved on meanwhile.
        assert!(matches!(
            pusher.push(&env, &test_update(&pack)),
            HttpPush::Done(Ok(PushOutcome::Moved(_)))
        ));
        server.join().unwrap();
    }

    #[test]
    fn an_answer_it_does_not_expect_leaves_this_remote_to_git_push() {
        assert!(HttpPusher::for_url("ssh://git@example.com/repo.git").is_none());
        // A web page where the advertisement should be, as a misrouted proxy would answer.
        let (port, server) = serve(vec![http_answer("text/html", "200 OK", b"hello")]);
        let dir = tempfile::tempdir().unwrap();
        let env = GitEnv::for_tests(dir.path());
        let pack = dir.path().join("batch.pack");
        std::fs::write(&pack, b"PACK").unwrap();
        let pusher = HttpPusher::for_url(&format!("http://127.0.0.1:{port}/repo.git/")).unwrap();
        let push = || pusher.push(&env, &test_update(&pack));

        let HttpPush::Fallback(reason) = push() else {
            panic!("pushed through a web page")
        };
        assert!(reason.contains("text/html"), "{reason}");
        let listener = server.join().unwrap();
        // The next push goes to git at once, without asking the remote again.
        assert!(matches!(push(), HttpPush::Fallback(_)));
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_err(), "asked the remote again");
    }

    #[test]
    fn status_reports_are_read_from_the_side_band() {
        let mut report = pkt(b"unpack ok\n");
        report.extend(pkt(b"ng refs/heads/main pre-receive hook declined\n"));
        report.extend_from_slice(b"0000");
        let mut answer = Vec::new();
        answer.extend(pkt(b"\x02remote: frozen until Monday\n"));
        answer.extend(pkt(&[&[1u8][..], &report].concat()));
        answer.extend_from_slice(b"0000");
        let read = read_report(&answer, true, "refs/heads/main").unwrap();
        assert_eq!(
            read,
            Report {
                unpack: "ok".to_owned(),
                refused: Some("pre-receive hook declined".to_owned()),
                messages: "remote: frozen until Monday\n".to_owned(),
            }
        );

        let mut plain = pkt(b"unpack ok\n");
        plain.extend(pkt(b"ok refs/heads/main\n"));
        plain.extend_from_slice(b"0000");
        let read = read_report(&plain, false, "refs/heads/main").unwrap();
        assert_eq!(read.refused, None);
        assert!(read_report(&plain, false, "refs/heads/other").is_err());

        let mut fatal = pkt(b"\x03index-pack abnormal exit\n");
        fatal.extend_from_slice(b"0000");
        assert!(read_report(&fatal, true, "refs/heads/main").is_err());
        assert!(read_report(b"00", false, "refs/heads/main").is_err());
        assert!(read_report(b"0009unpa", false, "refs/heads/main").is_err());
    }
}
