//! A throwaway certificate authority and a server certificate for 127.0.0.1 it signed, made by
//! the real `openssl`, for servers the tests run over TLS (tug itself, an identity issuer).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::servers::require_binary;

/// The key type of both certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Ed25519,
    EcP256,
}

impl KeyType {
    fn newkey(self) -> &'static [&'static str] {
        match self {
            KeyType::Ed25519 => &["-newkey", "ed25519"],
            KeyType::EcP256 => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        }
    }
}

/// The files [`certificates`] wrote.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA's certificate (PEM): what clients trust.
    pub ca: PathBuf,
    /// The server's certificate (PEM), for 127.0.0.1, valid two days.
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
}

/// Writes `ca.pem`, `server.pem` and `server.key` (and the CA's key) into `dir`.
pub fn certificates(dir: &Path, key_type: KeyType) -> Result<Pki> {
    let openssl = require_binary("openssl", "openssl")?;
    let run = |args: &[&str]| -> Result<()> {
        let out = Command::new(&openssl)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::io("run", &openssl, e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::Command {
                command: format!("openssl {}", args.join(" ")),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
    };
    let with_key = |head: &[&'static str], tail: &[&'static str]| -> Vec<&'static str> {
        head.iter()
            .chain(key_type.newkey())
            .chain(tail)
            .copied()
            .collect()
    };
    run(&with_key(
        &["req", "-x509"],
        &[
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=tug test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    ))?;
    run(&with_key(
        &["req", "-new"],
        &[
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    ))?;
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )
    .map_err(|e| Error::io("write", &ext, e))?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ])?;
    Ok(Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    })
}
