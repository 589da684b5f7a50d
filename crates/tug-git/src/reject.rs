//! What a remote's refusal of a push means: "the branch moved under you" (fetch, re-apply, push
//! again) or a hard refusal (a hook, branch protection, permissions) that no retry can change.
//!
//! A push is a compare-and-swap on one ref, and the swap can lose in several places, each of
//! which words the loss differently:
//!
//! * in `git push` itself, before anything is sent, when the advertised tip is not the expected
//!   one: `[rejected] (stale info)`, `(fetch first)`, `(non-fast-forward)`, `(already exists)`;
//! * in the remote's `receive-pack`, when the ref moved between the advertisement and the
//!   update (another push landed in between): the refs backend's lock or old-value check fails
//!   and the reason is `cannot lock ref '…': is at X but expected Y`, `failed to update ref`,
//!   `atomic transaction failed` (with `--atomic`, the real cause on stderr), or, since git 2.50,
//!   `incorrect old value provided` / `reference already exists` / `reference does not exist`;
//! * in forges that run their own ref store: GitHub, GitLab, Gitea and Bitbucket forward git's
//!   reasons; Azure Repos says `TF401028: The reference '…' has already been updated by another
//!   client`.
//!
//! Anything else — `pre-receive hook declined`, `protected branch hook declined`, `deny updating
//! a hidden ref`, `shallow update not allowed`, an aborting `reference-transaction` hook, missing
//! permissions — is a refusal and is reported with the remote's own words.

/// What the remote said to a push.
pub(crate) enum PushOutcome {
    Accepted,
    /// The branch is not where we expected it: fetch and try again.
    Moved(String),
}

/// How a refused push is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// The branch is no longer where the push expected it: fetch, re-apply, push again.
    Moved,
    /// The remote refused the update itself; retrying the same push cannot succeed.
    Refused,
}

/// Reasons (in the ref's status, lower case) that mean the branch moved. Each names where it
/// comes from, so a new wording can be added next to its siblings.
const MOVED: &[&str] = &[
    // git push, client side (transport.c), from the advertised refs:
    "stale info",
    "fetch first",
    "non-fast-forward",
    "already exists",
    "remote ref updated since checkout",
    // receive-pack and the files/reftable backends (refs.c, refs/files-backend.c):
    "cannot lock ref",
    "failed to lock",
    "failed to update ref",
    "atomic transaction failed",
    "incorrect old value provided",
    "reference does not exist",
    "reference already exists",
    "but expected",
    // Azure Repos:
    "tf401028",
    "has already been updated by another client",
];

/// Words on stderr that make a generic ref-transaction failure a refusal after all: a
/// `reference-transaction` hook aborted it.
const HOOK_ABORT: &[&str] = &[
    "aborted by the reference-transaction hook",
    "reference-transaction hook",
];

/// Classifies a refused push from the ref's status (`[remote rejected] (reason)` as
/// `git push --porcelain` prints it) and the push's stderr (where `remote: error: …` lines land).
pub(crate) fn classify(status: &str, stderr: &str) -> Rejection {
    let status = status.to_lowercase();
    let stderr = stderr.to_lowercase();
    if !MOVED.iter().any(|needle| status.contains(needle)) {
        return Rejection::Refused;
    }
    let generic =
        status.contains("atomic transaction failed") || status.contains("failed to update ref");
    if generic && HOOK_ABORT.iter().any(|needle| stderr.contains(needle)) {
        return Rejection::Refused;
    }
    Rejection::Moved
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (status as `git push --porcelain` prints it, stderr) — each a wording seen from git or a
    /// forge when the branch moved between the advertisement and the update.
    const MOVED_CASES: &[(&str, &str)] = &[
        // git push's own lease check.
        ("[rejected] (stale info)", ""),
        (
            "[rejected] (fetch first)",
            "hint: Updates were rejected because the remote contains work",
        ),
        ("[rejected] (non-fast-forward)", ""),
        ("[rejected] (already exists)", ""),
        ("[rejected] (remote ref updated since checkout)", ""),
        // receive-pack, non-atomic push (files backend).
        (
            "[remote rejected] (cannot lock ref 'refs/heads/main': is at c2bcdd1e0000000000000000000000000000beef but expected 18f3216e0000000000000000000000000000cafe)",
            "",
        ),
        (
            "[remote rejected] (failed to update ref)",
            "remote: error: cannot lock ref 'refs/heads/main': is at c2bcdd1 but expected 18f3216",
        ),
        (
            "[remote rejected] (cannot lock ref 'refs/heads/main': Unable to create '/srv/git/platform.git/refs/heads/main.lock': File exists.)",
            "",
        ),
        (
            "[remote rejected] (cannot lock ref 'refs/heads/main': reference already exists)",
            "",
        ),
        (
            "[remote rejected] (cannot lock ref 'refs/heads/main': reference is missing but expected 18f3216e)",
            "",
        ),
        // Older receive-pack.
        ("[remote rejected] (failed to lock)", ""),
        // receive-pack with --atomic: the cause is on stderr.
        (
            "[remote rejected] (atomic transaction failed)",
            "remote: error: cannot lock ref 'refs/heads/main': is at c2bcdd1 but expected 18f3216\nerror: failed to push some refs to 'git://127.0.0.1:9418/platform.git'",
        ),
        // git 2.50+ batched reference updates.
        ("[remote rejected] (incorrect old value provided)", ""),
        ("[remote rejected] (reference already exists)", ""),
        ("[remote rejected] (reference does not exist)", ""),
        // GitHub forwards git's reason.
        (
            "[remote rejected] (cannot lock ref 'refs/heads/main': is at 98bf7e54a615d7e23cbcf8688d22c4099a1d2240 but expected 00da1b358846ae9a8ffa71b34eb1e330e3a37e3d)",
            "",
        ),
        // Azure Repos.
        (
            "[remote rejected] (TF401028: The reference 'refs/heads/main' has already been updated by another client, so you cannot update it. Please try again.)",
            "",
        ),
    ];

    /// Refusals no retry can change.
    const REFUSED_CASES: &[(&str, &str)] = &[
        (
            "[remote rejected] (pre-receive hook declined)",
            "remote: branch is frozen",
        ),
        ("[remote rejected] (hook declined)", ""),
        (
            "[remote rejected] (protected branch hook declined)",
            "remote: error: GH006: Protected branch update failed for refs/heads/main.",
        ),
        ("[remote rejected] (deny updating a hidden ref)", ""),
        ("[remote rejected] (shallow update not allowed)", ""),
        ("[remote rejected] (missing necessary objects)", ""),
        ("[remote rejected] (unpacker error)", ""),
        ("[remote rejected] (branch is currently checked out)", ""),
        (
            "[remote rejected] (atomic transaction failed)",
            "remote: error: in 'prepared' phase, update aborted by the reference-transaction hook",
        ),
        (
            "[remote rejected] (failed to update ref)",
            "remote: error: in 'prepared' phase, update aborted by the reference-transaction hook",
        ),
        (
            "[remote rejected] (TF402455: Pushes to this branch are not permitted; you must use a pull request to update this branch.)",
            "",
        ),
        ("[rejected] (needs force)", ""),
        ("[remote failure] (remote failed to report status)", ""),
    ];

    #[test]
    fn every_way_of_saying_the_branch_moved_is_a_move() {
        for (status, stderr) in MOVED_CASES {
            assert_eq!(
                classify(status, stderr),
                Rejection::Moved,
                "{status} / {stderr}"
            );
        }
    }

    #[test]
    fn hooks_protection_and_permissions_are_refusals() {
        for (status, stderr) in REFUSED_CASES {
            assert_eq!(
                classify(status, stderr),
                Rejection::Refused,
                "{status} / {stderr}"
            );
        }
    }
}
