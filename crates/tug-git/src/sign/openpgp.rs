//! Detached OpenPGP signatures, as `git commit -S` makes them with gpg (`gpg.format=openpgp`,
//! git's default): a binary-document signature over the commit object, armoured. Signing is
//! in-process (rpgp, the `pgp` crate); no gpg, no agent, no keyring.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use pgp::composed::{
    ArmorOptions, Deserializable, DetachedSignature, SignedSecretKey, SignedSecretSubKey,
};
use pgp::crypto::public_key::PublicKeyAlgorithm;
use pgp::packet::{
    SecretKey, SecretSubkey, Signature, SignatureConfig, SignatureType, Subpacket, SubpacketData,
};
use pgp::types::{
    KeyDetails, KeyVersion, Password, S2kParams, SecretParams, SigningKey, StringToKey, Timestamp,
};
use zeroize::Zeroizing;

use super::signing_error;
use crate::error::GitError;

const SECRET_KEY_ARMOUR: &[u8] = b"-----BEGIN PGP PRIVATE KEY BLOCK-----";
const PUBLIC_KEY_ARMOUR: &[u8] = b"-----BEGIN PGP PUBLIC KEY BLOCK-----";
const EXPORT_HINT: &str = "`gpg --export-secret-keys --armor KEY` writes one";
/// GnuPG's private S2K type for a secret key that is not there (`gnu-dummy`): what
/// `gpg --export-secret-subkeys` writes for the primary key, or a key kept on a smartcard.
const GNU_DUMMY_S2K: u8 = 101;

/// Signs commits with an OpenPGP secret key, the ASCII-armoured transferable secret key
/// `gpg --export-secret-keys --armor` writes. The key must not be protected by a passphrase:
/// tug never prompts. The key's bytes never appear in an error; they are read once per batch
/// ([`OpenPgpSigner::load`]) and zeroed when the batch is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenPgpSigner {
    key_file: PathBuf,
}

impl OpenPgpSigner {
    /// A signer for `key_file`; nothing is read until [`OpenPgpSigner::check`] or a signature.
    pub fn new(key_file: impl Into<PathBuf>) -> Self {
        Self {
            key_file: key_file.into(),
        }
    }

    pub fn key_file(&self) -> &Path {
        &self.key_file
    }

    /// Makes sure the key file holds an unprotected OpenPGP secret key that can sign, by signing
    /// a fixed payload. Meant for start-up, so a bad key fails there and not at the first deploy.
    pub fn check(&self) -> Result<(), GitError> {
        self.load()?.sign(b"tug signing check\n").map(|_| ())
    }

    /// Reads the key for a batch and picks the key that signs: the newest valid signing subkey,
    /// else the primary key if it may sign, as gpg picks when told to sign with a primary key.
    pub(crate) fn load(&self) -> Result<LoadedKey<'_>, GitError> {
        let text = self.read_key()?;
        let armour = text
            .split(|&b| b == b'\n')
            .map(<[u8]>::trim_ascii)
            .find(|line| line.starts_with(b"-----BEGIN "));
        match armour {
            Some(line) if line == SECRET_KEY_ARMOUR => {}
            Some(line) if line == PUBLIC_KEY_ARMOUR => {
                return Err(self.error(format!(
                    "is an OpenPGP public key; signing needs the secret key ({EXPORT_HINT})"
                )));
            }
            _ => {
                return Err(self.error(format!(
                    "is not an ASCII-armoured OpenPGP secret key ({EXPORT_HINT})"
                )));
            }
        }
        // The parsed secret parameters zero themselves when dropped (rpgp's `ZeroizeOnDrop`),
        // as `text` does; what the parser copies on the way is beyond reach.
        let unreadable = |e: pgp::errors::Error| {
            self.error(format!("cannot be read as an OpenPGP secret key: {e}"))
        };
        let (mut keys, _headers) =
            SignedSecretKey::from_armor_many(&text[..]).map_err(unreadable)?;
        let key = keys
            .next()
            .ok_or_else(|| self.error(format!("holds no OpenPGP secret key ({EXPORT_HINT})")))?
            .map_err(unreadable)?;
        if let Some(Ok(_)) = keys.next() {
            return Err(self.error(
                "holds more than one OpenPGP key; export only the one that signs".to_owned(),
            ));
        }
        drop(keys);
        drop(text);
        let now = now().map_err(|reason| self.error(reason))?;
        let key = signing_key(key, now).map_err(|reason| self.error(reason))?;
        match key.secret_params() {
            SecretParams::Plain(_) => {}
            params if is_stub(params) => {
                return Err(self.error(format!(
                    "holds no secret for {} {:X} (a stub: the key is on a smartcard, or the file \
                     was made by `gpg --export-secret-subkeys`)",
                    key.role(),
                    key.fingerprint()
                )));
            }
            SecretParams::Encrypted(_) => {
                return Err(self.error(format!(
                    "{} {:X} is protected by a passphrase, and tug never prompts for one: \
                     remove it (`gpg --passwd KEY`, an empty passphrase) and export the key again",
                    key.role(),
                    key.fingerprint()
                )));
            }
        }
        Ok(LoadedKey { signer: self, key })
    }

    /// The key file's bytes, zeroed when dropped.
    fn read_key(&self) -> Result<Zeroizing<Vec<u8>>, GitError> {
        std::fs::read(&self.key_file)
            .map(Zeroizing::new)
            .map_err(|e| GitError::io("read signing key", &self.key_file, e))
    }

    fn error(&self, reason: String) -> GitError {
        signing_error(&self.key_file, reason)
    }
}

/// The key that signs: the primary key or one of its subkeys, without the rest of the
/// transferable key.
enum ChosenKey {
    Primary(SecretKey),
    Subkey(SecretSubkey),
}

impl ChosenKey {
    fn secret_params(&self) -> &SecretParams {
        match self {
            ChosenKey::Primary(key) => key.secret_params(),
            ChosenKey::Subkey(key) => key.secret_params(),
        }
    }

    fn fingerprint(&self) -> pgp::types::Fingerprint {
        match self {
            ChosenKey::Primary(key) => key.fingerprint(),
            ChosenKey::Subkey(key) => key.fingerprint(),
        }
    }

    fn role(&self) -> &'static str {
        match self {
            ChosenKey::Primary(_) => "primary key",
            ChosenKey::Subkey(_) => "signing subkey",
        }
    }
}

/// A signer with its key read, for one batch.
pub(crate) struct LoadedKey<'a> {
    signer: &'a OpenPgpSigner,
    key: ChosenKey,
}

impl LoadedKey<'_> {
    /// The armoured detached signature (`-----BEGIN PGP SIGNATURE-----` …) of `payload`, made
    /// now, with the subpackets gpg writes: the issuer's fingerprint and the creation time in the
    /// hashed area, the issuer's key id in the unhashed one.
    pub(crate) fn sign(&self, payload: &[u8]) -> Result<String, GitError> {
        let created = now().map_err(|reason| self.signer.error(reason))?;
        let signature = match &self.key {
            ChosenKey::Primary(key) => detached_signature(key, created, payload),
            ChosenKey::Subkey(key) => detached_signature(key, created, payload),
        };
        signature.map_err(|e| self.signer.error(format!("cannot sign: {e}")))
    }

    pub(crate) fn key_file(&self) -> &Path {
        self.signer.key_file()
    }
}

fn detached_signature(
    key: &impl SigningKey,
    created: Timestamp,
    payload: &[u8],
) -> pgp::errors::Result<String> {
    let mut config = SignatureConfig::v4(SignatureType::Binary, key.algorithm(), hash_alg(key));
    config.hashed_subpackets = vec![
        Subpacket::regular(SubpacketData::IssuerFingerprint(key.fingerprint()))?,
        Subpacket::regular(SubpacketData::SignatureCreationTime(created))?,
    ];
    config.unhashed_subpackets = vec![Subpacket::regular(SubpacketData::IssuerKeyId(
        key.legacy_key_id(),
    ))?];
    let signature = config.sign(key, &Password::empty(), payload)?;
    DetachedSignature::new(signature).to_armored_string(ArmorOptions::default())
}

/// SHA-512 where the algorithm takes any hash, as gpg's default digest preference (SHA-512
/// first) gives; for (EC)DSA the hash that fits the key, as rpgp recommends.
fn hash_alg(key: &impl SigningKey) -> pgp::crypto::hash::HashAlgorithm {
    match key.algorithm() {
        PublicKeyAlgorithm::RSA
        | PublicKeyAlgorithm::RSASign
        | PublicKeyAlgorithm::EdDSALegacy
        | PublicKeyAlgorithm::Ed25519 => pgp::crypto::hash::HashAlgorithm::Sha512,
        _ => key.hash_alg(),
    }
}

fn now() -> Result<Timestamp, String> {
    Timestamp::try_from(SystemTime::now()).map_err(|e| format!("cannot date a signature: {e}"))
}

/// Picks the key that signs, or says why none can. Only version 4 keys: gpg, which git runs to
/// verify, reads no version 6 signatures.
fn signing_key(key: SignedSecretKey, now: Timestamp) -> Result<ChosenKey, String> {
    let primary = &key.primary_key;
    if primary.version() != KeyVersion::V4 {
        return Err(format!(
            "is a version {} OpenPGP key; tug signs with version 4 keys, the ones gpg verifies",
            u8::from(primary.version())
        ));
    }
    let revoked = key
        .details
        .revocation_signatures
        .iter()
        .any(|sig| sig.verify_key(primary.public_key()).is_ok());
    if revoked {
        return Err(format!("key {:X} is revoked", primary.fingerprint()));
    }
    let self_signature = newest(
        key.details
            .direct_signatures
            .iter()
            .chain(key.details.users.iter().flat_map(|user| &user.signatures))
            .filter(|sig| issued_by(sig, primary)),
    );
    if let Some(sig) = self_signature
        && expired(primary.created_at(), sig, now)
    {
        return Err(format!("key {:X} has expired", primary.fingerprint()));
    }
    let subkey = key
        .secret_subkeys
        .iter()
        .enumerate()
        .filter(|(_, subkey)| subkey_signs(primary, subkey, now))
        .max_by_key(|(_, subkey)| subkey.key.created_at())
        .map(|(i, _)| i);
    if let Some(i) = subkey {
        let mut subkeys = key.secret_subkeys;
        return Ok(ChosenKey::Subkey(subkeys.swap_remove(i).key));
    }
    // Keys without key flags predate them: their primary key signs if its algorithm can.
    let flags_allow =
        self_signature.is_none_or(|sig| !has_key_flags(sig) || sig.key_flags().sign());
    if primary.algorithm().can_sign() && flags_allow {
        return Ok(ChosenKey::Primary(key.primary_key));
    }
    Err(format!(
        "key {:X} cannot sign: no valid subkey carries the sign flag, nor does the primary key",
        primary.fingerprint()
    ))
}

/// A subkey that signs: a signing algorithm, a valid binding signature with the sign flag, not
/// expired, not revoked.
fn subkey_signs(primary: &SecretKey, subkey: &SignedSecretSubKey, now: Timestamp) -> bool {
    if !subkey.key.algorithm().can_sign() {
        return false;
    }
    let binds = |sig: &&Signature| {
        sig.verify_subkey_binding(primary.public_key(), subkey.key.public_key())
            .is_ok()
    };
    let revoked = subkey
        .signatures
        .iter()
        .filter(|sig| sig.typ() == Some(SignatureType::SubkeyRevocation))
        .any(|sig| binds(&sig));
    let binding = newest(
        subkey
            .signatures
            .iter()
            .filter(|sig| sig.typ() == Some(SignatureType::SubkeyBinding))
            .filter(binds),
    );
    match binding {
        Some(binding) => {
            !revoked
                && binding.key_flags().sign()
                && !expired(subkey.key.created_at(), binding, now)
        }
        None => false,
    }
}

fn newest<'a>(signatures: impl Iterator<Item = &'a Signature>) -> Option<&'a Signature> {
    signatures.max_by_key(|sig| sig.created().map(Timestamp::as_secs))
}

fn issued_by(sig: &Signature, key: &SecretKey) -> bool {
    let fingerprint = key.fingerprint();
    let key_id = key.legacy_key_id();
    sig.issuer_fingerprint().contains(&&fingerprint) || sig.issuer_key_id().contains(&&key_id)
}

fn has_key_flags(sig: &Signature) -> bool {
    sig.config().is_some_and(|config| {
        config
            .hashed_subpackets()
            .any(|p| matches!(p.data, SubpacketData::KeyFlags(_)))
    })
}

/// Whether a key created at `created` has expired by `now`, by the key expiration time of its
/// newest self-signature (none, or zero: it never expires).
fn expired(created: Timestamp, sig: &Signature, now: Timestamp) -> bool {
    match sig.key_expiration_time() {
        Some(after) if after.as_secs() > 0 => {
            u64::from(created.as_secs()) + u64::from(after.as_secs()) <= u64::from(now.as_secs())
        }
        _ => false,
    }
}

fn is_stub(params: &SecretParams) -> bool {
    let SecretParams::Encrypted(params) = params else {
        return false;
    };
    match params.string_to_key_params() {
        S2kParams::Cfb { s2k, .. } | S2kParams::MalleableCfb { s2k, .. } => {
            matches!(s2k, StringToKey::Private { typ, .. } if *typ == GNU_DUMMY_S2K)
        }
        _ => false,
    }
}
