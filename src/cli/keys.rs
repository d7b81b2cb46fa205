//! `orgsplit keys`, `orgsplit token`, `orgsplit users`: what an operator
//! needs to hand out credentials (in the spirit of Opstrace's
//! `ta-create-keypair`, `ta-create-token`, `ta-pubkeys-add`).
//!
//! ```text
//!  keys create FILE ─► private key (PKCS#8 PEM, mode 0600) ─► keys public FILE ─► trust store
//!                                                          └► keys id FILE ─► kid
//!  token create --key FILE | --hs-secret-file FILE ─► signed JWT (kid in its header)
//!  token inspect TOKEN [--trust-store DIR ...] ─► header, claims, verifies or why not
//!  token revoke TOKEN|JTI --file F ─► the jti appended to the revocation file
//!  users hash < password ─► argon2id hash for the basic-auth users file
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};

use super::report;
use crate::auth::keys::kid;

/// Key types `keys create` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    /// ECDSA P-256 (ES256): small and fast.
    Ec,
    /// RSA 2048 (RS256): what Opstrace used.
    Rsa,
}

/// A private key read from a file.
enum PrivateKey {
    Rsa(Box<rsa::RsaPrivateKey>),
    Ec(p256::SecretKey),
}

impl PrivateKey {
    fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_pem(&text) {
            return Ok(Self::Rsa(Box::new(k)));
        }
        if let Ok(k) = rsa::RsaPrivateKey::from_pkcs1_pem(&text) {
            return Ok(Self::Rsa(Box::new(k)));
        }
        if let Ok(k) = p256::SecretKey::from_pkcs8_pem(&text) {
            return Ok(Self::Ec(k));
        }
        if let Ok(k) = p256::SecretKey::from_sec1_pem(&text) {
            return Ok(Self::Ec(k));
        }
        anyhow::bail!(
            "{}: not an RSA or EC P-256 private key in PEM (PKCS#8, PKCS#1 or SEC1)",
            path.display()
        )
    }

    fn public_pem(&self) -> anyhow::Result<String> {
        Ok(match self {
            Self::Rsa(k) => k.to_public_key().to_public_key_pem(LineEnding::LF)?,
            Self::Ec(k) => k.public_key().to_public_key_pem(LineEnding::LF)?,
        })
    }

    fn signing(&self) -> anyhow::Result<(Algorithm, EncodingKey)> {
        Ok(match self {
            Self::Rsa(k) => (
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(k.to_pkcs8_pem(LineEnding::LF)?.as_bytes())?,
            ),
            Self::Ec(k) => (
                Algorithm::ES256,
                EncodingKey::from_ec_pem(k.to_pkcs8_pem(LineEnding::LF)?.as_bytes())?,
            ),
        })
    }
}

/// `keys create FILE`: a new private key, mode 0600; prints its `kid`.
pub fn create(path: &Path, kind: KeyType, force: bool) -> anyhow::Result<String> {
    use rand_core::OsRng;
    let pem = match kind {
        KeyType::Ec => p256::SecretKey::random(&mut OsRng).to_pkcs8_pem(LineEnding::LF)?,
        KeyType::Rsa => rsa::RsaPrivateKey::new(&mut OsRng, 2048)?.to_pkcs8_pem(LineEnding::LF)?,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    // An existing file opened with --force keeps its mode: set it.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(pem.as_bytes())?;
    file.sync_all()?;
    id(path)
}

/// `keys public FILE`: the public key (SubjectPublicKeyInfo PEM) of a
/// private key, or of a public key file as it is.
pub fn public(path: &Path) -> anyhow::Result<String> {
    match PrivateKey::read(path) {
        Ok(k) => k.public_pem(),
        Err(private_error) => {
            let text = std::fs::read_to_string(path)?;
            if rsa::RsaPublicKey::from_public_key_pem(&text).is_ok()
                || p256::PublicKey::from_public_key_pem(&text).is_ok()
            {
                Ok(format!("{}\n", text.trim()))
            } else {
                Err(private_error)
            }
        }
    }
}

/// `keys id FILE`: the `kid` of a key (of its public PEM, for a private key).
pub fn id(path: &Path) -> anyhow::Result<String> {
    Ok(kid(&public(path)?))
}

/// What `token create` is asked for.
pub struct TokenRequest<'a> {
    pub key: Option<&'a Path>,
    pub hs_secret_file: Option<&'a Path>,
    pub tenant: Option<&'a str>,
    pub organizations: Vec<String>,
    pub organizations_claim: &'a str,
    /// Organizations it may read, when not those it may write.
    pub read_organizations: Vec<String>,
    /// May change rules and alertmanager state.
    pub rules: bool,
    pub subject: Option<&'a str>,
    /// `None`: the token never expires.
    pub expires: Option<Duration>,
    pub audience: Option<&'a str>,
    pub issuer: Option<&'a str>,
}

impl<'a> TokenRequest<'a> {
    /// A token for one tenant, valid for an hour, signed with `key` (a
    /// private key file) or, without one, nothing yet: set `key` or
    /// `hs_secret_file` (struct update syntax) before signing.
    pub fn for_tenant(tenant: &'a str) -> Self {
        Self {
            key: None,
            hs_secret_file: None,
            tenant: Some(tenant),
            organizations: vec![],
            organizations_claim: "organizations",
            read_organizations: vec![],
            rules: false,
            subject: None,
            expires: Some(Duration::from_secs(3600)),
            audience: None,
            issuer: None,
        }
    }
}

/// `token create`: a signed token.
pub fn token(req: &TokenRequest<'_>) -> anyhow::Result<String> {
    let (mut header, key) = match (req.key, req.hs_secret_file) {
        (Some(path), None) => {
            let private = PrivateKey::read(path)?;
            let (alg, key) = private.signing()?;
            let mut header = Header::new(alg);
            header.kid = Some(kid(&private.public_pem()?));
            (header, key)
        }
        (None, Some(path)) => {
            let bytes =
                std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let secret = bytes.trim_ascii();
            anyhow::ensure!(!secret.is_empty(), "{} is empty", path.display());
            (
                Header::new(Algorithm::HS256),
                EncodingKey::from_secret(secret),
            )
        }
        _ => anyhow::bail!("give exactly one of --key and --hs-secret-file"),
    };
    header.typ = Some("JWT".into());
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut claims = serde_json::Map::new();
    match (req.tenant, req.organizations.is_empty()) {
        (Some(t), true) => {
            crate::tenant::validate(t).map_err(|e| anyhow::anyhow!("--tenant {t:?}: {e}"))?;
            // Both conventions: cortex-gateway reads tenant_id, Opstrace sub.
            claims.insert("tenant_id".into(), t.into());
            claims.insert("sub".into(), format!("tenant-{t}").into());
        }
        (None, false) => {
            crate::tenant::Allowance::parse(&req.organizations)?;
            claims.insert(
                req.organizations_claim.into(),
                req.organizations.clone().into(),
            );
            claims.insert("sub".into(), req.subject.unwrap_or("orgsplit").into());
        }
        _ => anyhow::bail!("give exactly one of --tenant and --organizations"),
    }
    if let (Some(s), Some(_)) = (req.subject, req.tenant) {
        claims.insert("sub".into(), s.into());
    }
    if !req.read_organizations.is_empty() {
        crate::tenant::Allowance::parse(&req.read_organizations)?;
        claims.insert(
            "read_organizations".into(),
            req.read_organizations.clone().into(),
        );
    }
    if req.rules {
        claims.insert("rules".into(), true.into());
    }
    claims.insert("iat".into(), now.into());
    // A token ID, so this one token can be revoked (`token revoke`).
    claims.insert("jti".into(), new_jti().into());
    if let Some(ttl) = req.expires {
        claims.insert("exp".into(), (now + ttl.as_secs()).into());
    }
    if let Some(aud) = req.audience {
        claims.insert("aud".into(), aud.into());
    }
    if let Some(iss) = req.issuer {
        claims.insert("iss".into(), iss.into());
    }
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}

/// 128 random bits, hex.
fn new_jti() -> String {
    use rand_core::RngCore;
    let mut bytes = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `token revoke`: adds the `jti` of `token` (a token, or a bare `jti`)
/// to the revocation file; what happened, in words.
pub fn revoke(token_or_jti: &str, file: &Path) -> anyhow::Result<String> {
    let given = token_or_jti.trim();
    let (jti, note) = if given.matches('.').count() == 2 {
        // A token: its claims, unverified (revoking needs no key).
        use base64::Engine;
        let payload = given.split('.').nth(1).unwrap_or_default();
        let claims: serde_json::Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| anyhow::anyhow!("the token's claims do not decode"))?;
        let jti = claims
            .get("jti")
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the token has no jti claim: it cannot be revoked alone (rotate its key)"
                )
            })?
            .to_string();
        let sub = claims.get("sub").and_then(|v| v.as_str()).unwrap_or("?");
        (jti, format!("sub {sub}"))
    } else {
        (given.to_string(), "by jti".to_string())
    };
    let when = humantime::format_rfc3339_seconds(SystemTime::now());
    let added = crate::auth::revoked::append(file, &jti, &format!("revoked {when}, {note}"))
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(if added {
        format!("revoked {jti} in {}\n", file.display())
    } else {
        format!("{jti} was already revoked in {}\n", file.display())
    })
}

/// `token inspect`: the token's header and claims (unverified), and
/// whether it verifies against `jwt` (if any key is given there).
pub fn inspect(token: &str, jwt: Option<&crate::config::Jwt>) -> anyhow::Result<(String, bool)> {
    use base64::Engine;
    let token = token.trim();
    let mut parts = token.split('.');
    let mut out = String::new();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    for name in ["header", "claims"] {
        let part = parts.next().unwrap_or_default();
        let decoded = b64
            .decode(part.trim_end_matches('='))
            .map_err(|e| anyhow::anyhow!("{name} is not base64url: {e}"))?;
        let value: serde_json::Value = serde_json::from_slice(&decoded)
            .map_err(|e| anyhow::anyhow!("{name} is not JSON: {e}"))?;
        out.push_str(&format!(
            "{name}: {}\n",
            serde_json::to_string_pretty(&value)?
        ));
        if name == "claims" {
            for claim in ["iat", "nbf", "exp"] {
                if let Some(t) = value.get(claim).and_then(|t| t.as_u64()) {
                    let at = UNIX_EPOCH + Duration::from_secs(t);
                    out.push_str(&format!(
                        "{claim}: {}\n",
                        humantime::format_rfc3339_seconds(at)
                    ));
                }
            }
        }
    }
    let Some(jwt) = jwt else {
        out.push_str("signature: not checked (give --trust-store, --jwks-file, --fallback-key or --hs-secret-file)\n");
        return Ok((out, true));
    };
    let verifier = crate::auth::jwt::Verifier::new(jwt, metrics::Counter::noop())
        .map_err(|e| anyhow::anyhow!(e))?;
    let ok = match verifier.verify(token) {
        Ok(v) => {
            out.push_str(&format!(
                "verifies: yes (subject {:?}, may write {})\n",
                v.subject, v.allowance
            ));
            true
        }
        Err(reason) => {
            out.push_str(&format!("verifies: no ({})\n", explain(reason)));
            if let Some(keys) = verifier.key_set() {
                out.push_str(&format!("known kids: {}\n", keys.kids().join(", ")));
            }
            false
        }
    };
    Ok((out, ok))
}

/// A failure reason in words.
fn explain(reason: &str) -> &'static str {
    match reason {
        "too_large" => "the token is longer than auth.jwt.max_token_bytes",
        "malformed" => "not a well-formed JWT",
        "algorithm" => "its algorithm is not the one of any configured key (or is none)",
        "unknown_key" => "no key with its kid (or no fallback key for a token without kid)",
        "bad_signature" => "the signature does not match",
        "expired" => "it has expired (exp)",
        "revoked" => "its jti is in auth.jwt.revoked_file",
        "not_yet_valid" => "it is not valid yet (nbf)",
        "audience" => "its aud is not an accepted audience",
        "issuer" => "its iss is not the required issuer",
        "missing_claim" => "it has no exp and auth.jwt.require_expiry is set",
        "no_tenant" => {
            "it names no organization (organizations claim, tenant_id, or sub tenant-<name>)"
        }
        "bad_tenant" => "the organization it names is not a valid tenant ID",
        "key_allowance" => {
            "it grants organizations its signing key may not (auth.jwt.key_allowances)"
        }
        _ => "refused",
    }
}

/// `users hash`: an argon2id hash of the password read from `input`.
pub fn hash_password(input: &mut impl std::io::BufRead) -> anyhow::Result<String> {
    let mut password = String::new();
    input.read_line(&mut password)?;
    let password = password.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!password.is_empty(), "empty password on standard input");
    crate::auth::basic::hash(password).map_err(|e| anyhow::anyhow!(e))
}

/// `orgsplit keys ...`
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Make a key pair for signing tokens; writes the private key (mode
    /// 0600) and prints its kid.
    Create {
        file: PathBuf,
        #[arg(long = "type", value_enum, default_value = "ec")]
        kind: KeyType,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Print the kid of a key (public or private): hex SHA-1 of its public PEM.
    Id { file: PathBuf },
    /// Print the public key (PEM) to put in the trust store.
    Public { file: PathBuf },
}

/// `orgsplit token ...`
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Sign a token for a tenant or a list of organizations.
    Create {
        /// Private key (RS256 / ES256, by its type).
        #[arg(long, required_unless_present = "hs_secret_file")]
        key: Option<PathBuf>,
        /// HS256 secret file instead of a key.
        #[arg(long, conflicts_with = "key")]
        hs_secret_file: Option<PathBuf>,
        /// The one organization the token may write (claims tenant_id and
        /// sub = `tenant-<T>`).
        #[arg(long, required_unless_present = "organizations")]
        tenant: Option<String>,
        /// Organizations (or prefixes ending in *) the token may write.
        #[arg(long, value_delimiter = ',', conflicts_with = "tenant")]
        organizations: Vec<String>,
        #[arg(long, default_value = "organizations")]
        organizations_claim: String,
        /// Organizations it may read through the read proxy (default: the
        /// ones it may write).
        #[arg(long, value_delimiter = ',')]
        read_organizations: Vec<String>,
        /// May change rules and alertmanager state (silences, config).
        #[arg(long)]
        rules: bool,
        #[arg(long)]
        subject: Option<String>,
        /// Lifetime (e.g. 90d, 12h), or "never".
        #[arg(long, default_value = "90d")]
        expires: String,
        #[arg(long)]
        audience: Option<String>,
        #[arg(long)]
        issuer: Option<String>,
    },
    /// Revoke one token: add its `jti` to the revocation file
    /// (`auth.jwt.revoked_file`), which running servers follow.
    Revoke {
        /// The token (`-` reads it from standard input), or its `jti`.
        token: String,
        /// The revocation file (created if missing).
        #[arg(long)]
        file: PathBuf,
    },
    /// Decode a token (`-` reads it from standard input) and say whether it
    /// verifies, and why not.
    Inspect {
        token: String,
        #[arg(long)]
        trust_store: Option<PathBuf>,
        #[arg(long)]
        jwks_file: Option<PathBuf>,
        #[arg(long)]
        fallback_key: Option<PathBuf>,
        #[arg(long)]
        hs_secret_file: Option<PathBuf>,
        #[arg(long)]
        audience: Option<String>,
    },
}

/// `orgsplit users ...`
#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Read a password from standard input, print its argon2id hash for
    /// the users file.
    Hash,
}

/// Runs a `keys` command.
pub fn keys(cmd: KeysCommand) -> ExitCode {
    report(match cmd {
        KeysCommand::Create { file, kind, force } => create(&file, kind, force).map(|kid| {
            eprintln!(
                "wrote {} (keep it secret); put `orgsplit keys public {}` in the trust store",
                file.display(),
                file.display()
            );
            format!("{kid}\n")
        }),
        KeysCommand::Id { file } => id(&file).map(|kid| format!("{kid}\n")),
        KeysCommand::Public { file } => public(&file),
    })
}

/// A token given on the command line, or read from standard input (`-`).
fn token_arg(token: String) -> std::io::Result<String> {
    if token != "-" {
        return Ok(token);
    }
    let mut t = String::new();
    std::io::stdin().read_line(&mut t)?;
    Ok(t)
}

/// Runs a `token` command.
pub fn tokens(cmd: TokenCommand) -> ExitCode {
    match cmd {
        TokenCommand::Create {
            key,
            hs_secret_file,
            tenant,
            organizations,
            organizations_claim,
            read_organizations,
            rules,
            subject,
            expires,
            audience,
            issuer,
        } => {
            let expires = match expires.as_str() {
                "never" => Ok(None),
                text => humantime::parse_duration(text)
                    .map(Some)
                    .map_err(|e| anyhow::anyhow!("--expires {text:?}: {e}")),
            };
            report(expires.and_then(|expires| {
                token(&TokenRequest {
                    key: key.as_deref(),
                    hs_secret_file: hs_secret_file.as_deref(),
                    tenant: tenant.as_deref(),
                    organizations,
                    organizations_claim: &organizations_claim,
                    read_organizations,
                    rules,
                    subject: subject.as_deref(),
                    expires,
                    audience: audience.as_deref(),
                    issuer: issuer.as_deref(),
                })
                .map(|t| format!("{t}\n"))
            }))
        }
        TokenCommand::Revoke { token, file } => {
            let token = match token_arg(token) {
                Ok(t) => t,
                Err(e) => return report(Err(e.into())),
            };
            report(revoke(&token, &file))
        }
        TokenCommand::Inspect {
            token,
            trust_store,
            jwks_file,
            fallback_key,
            hs_secret_file,
            audience,
        } => {
            let token = match token_arg(token) {
                Ok(t) => t,
                Err(e) => return report(Err(e.into())),
            };
            let any_key = trust_store.is_some()
                || jwks_file.is_some()
                || fallback_key.is_some()
                || hs_secret_file.is_some();
            let jwt = crate::config::Jwt {
                trust_store,
                jwks_file,
                fallback_key,
                hs256_secret_file: hs_secret_file,
                audience: audience.into_iter().collect(),
                ..Default::default()
            };
            match inspect(&token, any_key.then_some(&jwt)) {
                Ok((text, ok)) => {
                    print!("{text}");
                    if ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => report(Err(e)),
            }
        }
    }
}

/// Runs a `users` command.
pub fn users(cmd: UsersCommand) -> ExitCode {
    match cmd {
        UsersCommand::Hash => {
            report(hash_password(&mut std::io::stdin().lock()).map(|h| format!("{h}\n")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_keys_sign_tokens_the_verifier_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        let key = dir.path().join("k.pem");
        let kid = create(&key, KeyType::Ec, false).unwrap();
        assert!(create(&key, KeyType::Ec, false).is_err(), "overwrote a key");
        let mode = std::fs::metadata(&key).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        std::fs::write(store.join("k.pub"), public(&key).unwrap()).unwrap();
        assert_eq!(id(&store.join("k.pub")).unwrap(), kid);

        let token = token(&TokenRequest {
            key: Some(&key),
            ..TokenRequest::for_tenant("acme")
        })
        .unwrap();
        let jwt = crate::config::Jwt {
            trust_store: Some(store),
            ..Default::default()
        };
        let (text, ok) = inspect(&token, Some(&jwt)).unwrap();
        assert!(ok, "{text}");
        assert!(text.contains("may write acme"), "{text}");
        assert!(text.contains(&kid), "{text}");
    }
}
