//! Private keys: loading from PEM in its common flavours, generation, and the public JWK.
//!
//! Loading is where key mistakes must surface: at startup, with a message naming what was
//! found, never at the first token request. Accepted: PKCS#8 (PEM label `PRIVATE KEY`)
//! and PKCS#1 (label `RSA PRIVATE KEY`) RSA keys of at least 2048 bits, PKCS#8 and SEC1
//! (label `EC PRIVATE KEY`) EC P-384 keys; LF or CRLF line endings, or a one-line value
//! with literal `\n` sequences as environment variables carry it. Refused with a typed
//! [`KeyError`]: encrypted PEM, RSA under 2048 bits, a key that does not fit the
//! algorithm, anything that is not a private key. No error ever holds key bytes.

use crate::alg::{Alg, KeyFamily};
use crate::jwk::PublicJwk;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _};
use std::fmt;
use std::path::Path;

/// Why a key could not be loaded or used. Messages name the format found and what to do;
/// they never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The input holds no PEM block at all.
    #[error("no PEM block found: expected a PEM private key (PKCS#8, label PRIVATE KEY; or PKCS#1, label RSA PRIVATE KEY); if it came from an environment variable, check that its line breaks survived (literal \\n sequences are accepted)")]
    NotPem,
    /// The PEM is encrypted.
    #[error("found an encrypted private key ({format}); encrypted keys and passphrases are not supported: decrypt it (e.g. `openssl pkey -in KEY -out KEY.pem`) and protect the file with mode 0600")]
    Encrypted {
        /// The PEM label or header seen.
        format: String,
    },
    /// A PEM block that is not a private key.
    #[error("found {found}, not a private key: point this setting at the private key file")]
    NotPrivate {
        /// What was found, e.g. "a public key (BEGIN PUBLIC KEY)".
        found: String,
    },
    /// The DER inside the PEM did not parse as the labelled format.
    #[error("found a {format} PEM block whose contents do not parse as a key; the file may be truncated or corrupted")]
    Malformed {
        /// The detected format.
        format: String,
    },
    /// RSA key under 2048 bits.
    #[error("found an RSA key ({format}) smaller than 2048 bits; EHR vendors and this gateway require at least 2048 bits: generate a new key with `medicodax keys generate`")]
    RsaTooSmall {
        /// The detected format.
        format: String,
    },
    /// RSA key above 8192 bits.
    #[error("found an RSA key ({format}) larger than 8192 bits, which is not supported")]
    RsaTooLarge {
        /// The detected format.
        format: String,
    },
    /// The key's type does not fit the algorithm configured.
    #[error("found {found} ({format}) but the configured algorithm {alg} needs {needed}: use a matching key or change `alg`")]
    WrongType {
        /// The key type found.
        found: String,
        /// The PEM format.
        format: String,
        /// The configured algorithm.
        alg: Alg,
        /// The key type it needs.
        needed: KeyFamily,
    },
    /// We do not sign with this algorithm.
    #[error("algorithm {0} cannot be used for signing here: use RS384 or ES384")]
    CannotSign(Alg),
    /// Reading the key file failed.
    #[error("cannot read key file {path}: {reason}")]
    Io {
        /// The path.
        path: String,
        /// The OS error text.
        reason: String,
    },
    /// The key file may be read by other users.
    #[error("key file {path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions {
        /// The path.
        path: String,
        /// The file mode bits.
        mode: u32,
    },
    /// Key generation failed in the crypto library.
    #[error("key generation failed in the crypto library")]
    Generate,
}

enum Inner {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// A private signing key for one algorithm, with its `kid`.
///
/// `Debug` shows only the algorithm and `kid`.
pub struct PrivateKey {
    inner: Inner,
    alg: Alg,
    kid: String,
    public: PublicJwk,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey").field("alg", &self.alg).field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// Turns the PEM variants people paste into something the PEM parser takes:
/// surrounding quotes and whitespace trimmed, literal `\n` sequences (a one-line
/// environment value) turned into line breaks, CRLF into LF.
pub fn normalize_pem(text: &str) -> String {
    let t = text.trim().trim_matches(|c| c == '"' || c == '\'').trim();
    let t = if !t.contains('\n') && t.contains("\\n") { t.replace("\\r\\n", "\n").replace("\\n", "\n") } else { t.to_owned() };
    t.replace('\r', "")
}

impl PrivateKey {
    /// Loads a private key from PEM text for use with `alg`.
    pub fn from_pem(text: &str, alg: Alg) -> Result<Self, KeyError> {
        if !alg.can_sign() {
            return Err(KeyError::CannotSign(alg));
        }
        let text = normalize_pem(text);
        if text.contains(concat!("-----BEGIN ", "ENCRYPTED PRIVATE KEY-----")) {
            return Err(KeyError::Encrypted { format: "PKCS#8, label ENCRYPTED PRIVATE KEY".into() });
        }
        if text.contains("Proc-Type: 4,ENCRYPTED") {
            return Err(KeyError::Encrypted { format: "legacy PEM with Proc-Type: 4,ENCRYPTED".into() });
        }
        let blocks = pem::parse_many(text.as_bytes()).map_err(|_| KeyError::NotPem)?;
        if blocks.is_empty() {
            return Err(KeyError::NotPem);
        }
        let Some(block) = blocks.iter().find(|b| b.tag().ends_with("PRIVATE KEY")) else {
            let tag = blocks[0].tag();
            let found = match tag {
                "PUBLIC KEY" | "RSA PUBLIC KEY" => format!("a public key (BEGIN {tag})"),
                "CERTIFICATE" => "a certificate (BEGIN CERTIFICATE)".to_owned(),
                other => format!("a PEM block labelled {:?}", other.chars().take(40).collect::<String>()),
            };
            return Err(KeyError::NotPrivate { found });
        };
        let der = block.contents();
        let (inner, format) = match block.tag() {
            "PRIVATE KEY" => (parse_pkcs8(der, alg)?, "PKCS#8"),
            "RSA PRIVATE KEY" => {
                let k = RsaKeyPair::from_der(der).map_err(|e| rsa_error(e, "PKCS#1"))?;
                (Inner::Rsa(k), "PKCS#1")
            }
            "EC PRIVATE KEY" => {
                let k = EcdsaKeyPair::from_private_key_der(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, der).map_err(|_| {
                    if EcdsaKeyPair::from_private_key_der(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der).is_ok() {
                        wrong_type("an EC P-256 key", "SEC1", alg)
                    } else {
                        KeyError::Malformed { format: "SEC1 EC".into() }
                    }
                })?;
                (Inner::Ec(k), "SEC1")
            }
            other => return Err(KeyError::NotPrivate { found: format!("a PEM block labelled {other:?}") }),
        };
        Self::from_inner(inner, alg, format)
    }

    /// Loads a private key from PEM text, choosing the algorithm from the key: RSA keys
    /// sign RS384, EC P-384 keys ES384.
    pub fn from_pem_auto(text: &str) -> Result<Self, KeyError> {
        match Self::from_pem(text, Alg::RS384) {
            Err(KeyError::WrongType { found, .. }) if found == "an EC P-384 key" => Self::from_pem(text, Alg::ES384),
            other => other,
        }
    }

    /// Loads a private key file with [`PrivateKey::from_pem_auto`], refusing one readable by group or others.
    pub fn from_file_auto(path: &Path) -> Result<Self, KeyError> {
        // What the file is comes first (a folder, a public key), then who may read it.
        let text = read_key_file(path)?;
        let key = Self::from_pem_auto(&text)?;
        check_private_permissions(path)?;
        Ok(key)
    }

    /// Loads a private key file, refusing one readable by group or others.
    pub fn from_file(path: &Path, alg: Alg) -> Result<Self, KeyError> {
        // What the file is comes first (a folder, a public key), then who may read it.
        let text = read_key_file(path)?;
        let key = Self::from_pem(&text, alg)?;
        check_private_permissions(path)?;
        Ok(key)
    }

    /// Generates a new key for `alg` (RSA-2048 for RS384, P-384 for ES384).
    pub fn generate(alg: Alg) -> Result<Self, KeyError> {
        let inner = match alg {
            Alg::RS384 => Inner::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generate)?),
            Alg::ES384 => {
                let doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new())
                    .map_err(|_| KeyError::Generate)?;
                Inner::Ec(
                    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, doc.as_ref()).map_err(|_| KeyError::Generate)?,
                )
            }
            other => return Err(KeyError::CannotSign(other)),
        };
        Self::from_inner(inner, alg, "generated")
    }

    fn from_inner(inner: Inner, alg: Alg, format: &str) -> Result<Self, KeyError> {
        let public = match (&inner, alg.family()) {
            (Inner::Rsa(k), KeyFamily::Rsa) => {
                let p = k.public_key();
                PublicJwk::rsa(p.modulus().big_endian_without_leading_zero(), p.exponent().big_endian_without_leading_zero())
            }
            (Inner::Ec(k), KeyFamily::EcP384) => PublicJwk::ec_p384_from_uncompressed(k.public_key().as_ref()).ok_or(KeyError::Malformed { format: format.into() })?,
            (Inner::Rsa(_), _) => return Err(wrong_type("an RSA key", format, alg)),
            (Inner::Ec(_), _) => return Err(wrong_type("an EC P-384 key", format, alg)),
        };
        let kid = public.thumbprint();
        let public = public.with_kid(&kid).with_alg(alg);
        Ok(PrivateKey { inner, alg, kid, public })
    }

    /// Replaces the `kid` (the RFC 7638 thumbprint by default).
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = kid.into();
        self.public = self.public.with_kid(&self.kid);
        self
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The RFC 7638 SHA-256 thumbprint, whatever the configured `kid`.
    pub fn thumbprint(&self) -> String {
        self.public.thumbprint()
    }

    /// The public half as a JWK (`kty`, `kid`, `alg`, `use` `sig`, and the key members).
    pub fn public_jwk(&self) -> &PublicJwk {
        &self.public
    }

    /// The key as an unencrypted PKCS#8 PEM, for writing to a `0600` file.
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        let der: Vec<u8> = match &self.inner {
            Inner::Rsa(k) => k.as_der().map_err(|_| KeyError::Generate)?.as_ref().to_vec(),
            Inner::Ec(k) => k.to_pkcs8v1().map_err(|_| KeyError::Generate)?.as_ref().to_vec(),
        };
        Ok(pem::encode_config(&pem::Pem::new("PRIVATE KEY", der), pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF)))
    }

    /// Signs `message` with this key's algorithm, giving the raw JWS signature bytes
    /// (PKCS#1 v1.5 for RS384; fixed-width `r || s` for ES384).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let rng = SystemRandom::new();
        match &self.inner {
            Inner::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA384, &rng, message, &mut sig).map_err(|_| SignError)?;
                Ok(sig)
            }
            Inner::Ec(k) => Ok(k.sign(&rng, message).map_err(|_| SignError)?.as_ref().to_vec()),
        }
    }
}

/// The crypto library refused to sign (should not happen with a loaded key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signing failed in the crypto library")]
pub struct SignError;

fn wrong_type(found: &str, format: &str, alg: Alg) -> KeyError {
    KeyError::WrongType { found: found.into(), format: format.into(), alg, needed: alg.family() }
}

fn rsa_error(e: aws_lc_rs::error::KeyRejected, format: &str) -> KeyError {
    match e.description_() {
        "TooSmall" => KeyError::RsaTooSmall { format: format.into() },
        "TooLarge" => KeyError::RsaTooLarge { format: format.into() },
        _ => KeyError::Malformed { format: format!("{format} RSA") },
    }
}

fn parse_pkcs8(der: &[u8], alg: Alg) -> Result<Inner, KeyError> {
    let rsa_err = match RsaKeyPair::from_pkcs8(der) {
        Ok(k) => return Ok(Inner::Rsa(k)),
        Err(e) => rsa_error(e, "PKCS#8"),
    };
    if matches!(rsa_err, KeyError::RsaTooSmall { .. } | KeyError::RsaTooLarge { .. }) {
        return Err(rsa_err);
    }
    if let Ok(k) = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, der) {
        return Ok(Inner::Ec(k));
    }
    for (curve, a) in [("an EC P-256 key", &signature::ECDSA_P256_SHA256_FIXED_SIGNING), ("an EC P-521 key", &signature::ECDSA_P521_SHA512_FIXED_SIGNING)] {
        if EcdsaKeyPair::from_pkcs8(a, der).is_ok() {
            return Err(wrong_type(curve, "PKCS#8", alg));
        }
    }
    if signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).is_ok() {
        return Err(wrong_type("an Ed25519 key", "PKCS#8", alg));
    }
    Err(KeyError::Malformed { format: "PKCS#8".into() })
}

/// Refuses a private key file that group or others may read (Unix only).
pub fn check_private_permissions(path: &Path) -> Result<(), KeyError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| KeyError::Io { path: path.display().to_string(), reason: e.kind().to_string() })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions { path: path.display().to_string(), mode });
        }
    }
    Ok(())
}

fn read_key_file(path: &Path) -> Result<String, KeyError> {
    let io = |reason: String| KeyError::Io { path: path.display().to_string(), reason };
    let meta = std::fs::metadata(path).map_err(|e| io(e.kind().to_string()))?;
    if !meta.is_file() {
        return Err(io("it is not a regular file (a folder?); pass the PEM file of a private key".into()));
    }
    std::fs::read_to_string(path).map_err(|e| io(e.kind().to_string()))
}

/// Writes a private key as PKCS#8 PEM to `path` with mode `0600`, creating parent folders.
pub fn write_private_key(path: &Path, key: &PrivateKey) -> Result<(), KeyError> {
    let io = |e: std::io::Error| KeyError::Io { path: path.display().to_string(), reason: e.kind().to_string() };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let pem = key.to_pkcs8_pem()?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let tmp = path.with_extension("pem.tmp");
    {
        use std::io::Write;
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(pem.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}
