//! Automatic HTTPS for `peerlink serve`: certificates from an ACME CA (RFC 8555; Let's Encrypt
//! by default), as Caddy does it.
//!
//! The protocol is instant-acme's (a small, maintained client on hyper and rustls that leaves
//! challenge answering, storage and scheduling to its user); this module answers the
//! challenges, keeps the cache and schedules renewals:
//! - TLS-ALPN-01 (RFC 8737) on the HTTPS listener itself: a TLS client offering only the ALPN
//!   protocol `acme-tls/1` gets the challenge certificate for its SNI name ([`Resolver`]), and
//!   the connection ends after the handshake (see `https`);
//! - HTTP-01 on `--acme-http` (port 80), which also sends plain-HTTP visitors to https
//!   ([`http_router`]); tried first when it is given;
//! - the account key and each certificate with its key live in the cache folder, so a restart
//!   serves the cached certificate at once without a new order;
//! - renewal at 2/3 of the certificate's life; a failure is logged with what to check and
//!   retried with exponential backoff (10 s doubling to an hour), never sooner than the CA's
//!   `Retry-After` asks, and an hour at least when the CA says rate-limited without saying how
//!   long (`retry_wait`). STUN and TURN never wait for any of this;
//! - until the first certificate arrives, TLS is served with a self-signed placeholder and
//!   every HTTPS request gets a 503 saying what is going on ([`Acme::waiting_message`]).
//!
//! A new certificate reaches the listeners as a new `rustls::ServerConfig`, through the same
//! path as a SIGHUP reload: open connections and TURN allocations carry on.

use crate::tls::CertInfo;
use anyhow::Context;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder,
    OrderStatus, Problem, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Let's Encrypt's production directory: the default CA.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// The ALPN protocol of TLS-ALPN-01 (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// One whole attempt (directory, account, order, validation, issuance) gives up after this.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(180);
const FIRST_RETRY: Duration = Duration::from_secs(10);
const MAX_RETRY: Duration = Duration::from_secs(3600);
/// A `Retry-After` longer than this is taken as this: the certificate may expire meanwhile.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// What `--acme-*` asked for.
#[derive(Debug, Clone)]
pub struct Settings {
    pub domains: Vec<String>,
    pub email: Option<String>,
    pub directory: String,
    /// Extra roots to trust for the directory's own HTTPS (a test or private CA).
    pub ca_roots: Vec<PathBuf>,
    pub cache: PathBuf,
    /// The HTTPS listener (--http): TLS-ALPN-01 is answered there.
    pub https: SocketAddr,
    /// `--acme-http`: HTTP-01 is answered there (and tried first).
    pub http: Option<SocketAddr>,
}

impl Settings {
    /// Checks the options: names the CA can validate, an https:// directory, readable roots.
    pub fn new(
        domains: &[String],
        email: Option<&str>,
        directory: Option<&str>,
        ca_roots: &[PathBuf],
        cache: Option<&Path>,
        https: SocketAddr,
        http: Option<SocketAddr>,
    ) -> anyhow::Result<Settings> {
        let mut names: Vec<String> = Vec::new();
        for domain in domains {
            let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
            if domain.parse::<std::net::IpAddr>().is_ok() || !domain.contains('.') && domain != "localhost" {
                anyhow::bail!(
                    "bad --acme-domain {domain:?}: a DNS name such as meet.example.org (not an IP address)"
                );
            }
            if domain.starts_with("*.") {
                anyhow::bail!("bad --acme-domain {domain}: wildcards need the DNS-01 challenge, which peerlink does not do");
            }
            crate::options::check_public_name(&domain).context("bad --acme-domain")?;
            if !names.contains(&domain) {
                names.push(domain);
            }
        }
        if names.is_empty() {
            anyhow::bail!("--acme-domain is needed for ACME");
        }
        if let Some(email) = email {
            if !email.contains('@') || email.contains(char::is_whitespace) || email.contains(',') {
                anyhow::bail!("bad --acme-email {email:?}: one address such as admin@example.org");
            }
        }
        let directory = directory.unwrap_or(LETS_ENCRYPT).to_owned();
        if !directory.starts_with("https://") {
            anyhow::bail!("bad --acme-directory {directory}: an https:// URL (RFC 8555 requires HTTPS)");
        }
        for root in ca_roots {
            load_roots(root)?;
        }
        let cache = match cache {
            Some(dir) => dir.to_owned(),
            None => default_cache().context("no --acme-cache given and no state folder to put it in")?,
        };
        Ok(Settings {
            domains: names,
            email: email.map(str::to_owned),
            directory,
            ca_roots: ca_roots.to_vec(),
            cache,
            https,
            http,
        })
    }
}

/// `$STATE_DIRECTORY/acme` (systemd's StateDirectory=), else `$XDG_STATE_HOME/peerlink/acme`,
/// else `~/.local/state/peerlink/acme`.
pub fn default_cache() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(state) = std::env::var("STATE_DIRECTORY").ok().filter(|v| !v.is_empty()) {
        // systemd gives a colon-separated list when the unit names several.
        let first = state.split(':').next().unwrap_or(&state);
        return Some(Path::new(first).join("acme"));
    }
    if let Some(xdg) = var("XDG_STATE_HOME") {
        return Some(xdg.join("peerlink/acme"));
    }
    var("HOME").map(|home| home.join(".local/state/peerlink/acme"))
}

/// Challenge answers waiting for the CA's validation.
#[derive(Debug, Default)]
pub struct Challenges {
    /// TLS-ALPN-01: the acmeIdentifier certificate for each name.
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// HTTP-01: token -> key authorization.
    http: Mutex<HashMap<String, String>>,
}

impl Challenges {
    pub fn http_answer(&self, token: &str) -> Option<String> {
        self.http.lock().ok()?.get(token).cloned()
    }

    fn alpn_answer(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.alpn.lock().ok()?.get(&name.to_ascii_lowercase()).cloned()
    }
}

/// Picks the certificate of a TLS handshake: the TLS-ALPN-01 answer for a validation
/// handshake (ALPN `acme-tls/1`), else the current certificate.
#[derive(Debug)]
pub struct Resolver {
    current: Arc<CertifiedKey>,
    challenges: Arc<Challenges>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let validating = hello.alpn().is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if validating {
            return self.challenges.alpn_answer(hello.server_name()?);
        }
        Some(self.current.clone())
    }
}

/// A certificate the server holds, with what is known of it.
#[derive(Debug, Clone)]
struct Held {
    key: Arc<CertifiedKey>,
    /// `None` for the self-signed placeholder.
    info: Option<CertInfo>,
}

/// The ACME side of a running `serve`: the certificate in use, the challenge answers, and
/// the task that obtains and renews.
#[derive(Debug)]
pub struct Acme {
    settings: Settings,
    challenges: Arc<Challenges>,
    held: Mutex<Held>,
    ready: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// The `Retry-After` of the CA's last error answer in this attempt.
    retry_after: Arc<Mutex<Option<String>>>,
}

/// Why an attempt failed: decides the hint and the wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The directory (or the CA's HTTPS) could not be reached or trusted.
    Unreachable,
    RateLimited,
    /// The CA could not validate a name.
    Challenge,
    Other,
}

#[derive(Debug)]
struct Failure {
    kind: Kind,
    message: String,
}

impl Failure {
    fn new(kind: Kind, message: impl Into<String>) -> Failure {
        Failure { kind, message: message.into() }
    }
}

impl Acme {
    /// Makes the cache folder and takes a valid cached certificate for the names, if there is
    /// one; otherwise a self-signed placeholder until the CA issues one.
    pub fn new(settings: Settings) -> anyhow::Result<Arc<Acme>> {
        make_private_dir(&settings.cache).with_context(|| {
            format!("cannot use the ACME cache folder {} (give --acme-cache DIR)", settings.cache.display())
        })?;
        let (held, ready) = match load_cached(&settings) {
            Some(held) => (held, true),
            None => (Held { key: placeholder(&settings.domains)?, info: None }, false),
        };
        Ok(Arc::new(Acme {
            settings,
            challenges: Arc::new(Challenges::default()),
            held: Mutex::new(held),
            ready: AtomicBool::new(ready),
            last_error: Mutex::new(None),
            retry_after: Arc::new(Mutex::new(None)),
        }))
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn challenges(&self) -> Arc<Challenges> {
        self.challenges.clone()
    }

    /// Whether a certificate from the CA (fresh or cached) is being served.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Validity of the certificate in use (seconds since the epoch), if from the CA.
    pub fn validity(&self) -> Option<(i64, i64)> {
        let held = self.held.lock().ok()?;
        held.info.as_ref().map(|info| (info.not_before, info.not_after))
    }

    /// A TLS server config serving the current certificate and answering TLS-ALPN-01.
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let current = self.held.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.key.clone();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("tls versions")?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver { current, challenges: self.challenges.clone() }));
        Ok(Arc::new(config))
    }

    /// The 503 text of an HTTPS request while there is no certificate yet.
    pub fn waiting_message(&self) -> String {
        let mut text = format!(
            "This Peerlink server has no certificate for {} yet: it is asking the ACME CA at {} for one.\n",
            self.settings.domains.join(", "),
            self.settings.directory
        );
        match self.last_error.lock().ok().and_then(|e| e.clone()) {
            Some(error) => text.push_str(&format!("The last attempt failed: {error}\n")),
            None => text.push_str("No attempt has failed so far; this usually takes seconds.\n"),
        }
        text.push_str("The server's log says more. STUN and TURN work meanwhile.\n");
        text
    }

    /// What the startup lines say about the certificate.
    pub fn describe(&self) -> String {
        match self.validity() {
            Some((not_before, not_after)) => format!(
                "certificate for {} from the cache, valid until {}, renewal from {}",
                self.settings.domains.join(", "),
                fmt_utc(not_after),
                fmt_utc(renew_at(not_before, not_after))
            ),
            None => format!(
                "no certificate for {} yet: ordering one from {}",
                self.settings.domains.join(", "),
                self.settings.directory
            ),
        }
    }

    /// Obtains and renews for ever; `install` gets each new certificate's server config and
    /// expiry.
    /// Lines for scripts go to `say`.
    pub async fn run(
        self: Arc<Self>,
        install: impl Fn(Arc<rustls::ServerConfig>, i64) + Send + 'static,
        say: fn(std::fmt::Arguments),
    ) {
        let mut failures: u32 = 0;
        loop {
            if failures == 0 {
                if let Some((not_before, not_after)) = self.validity() {
                    let wait = renew_at(not_before, not_after) - unix_now();
                    if wait > 0 {
                        tokio::time::sleep(Duration::from_secs(wait as u64)).await;
                    }
                }
            }
            let renewing = self.validity().is_some();
            if let Ok(mut asked) = self.retry_after.lock() {
                *asked = None;
            }
            tracing::info!(domains = ?self.settings.domains, directory = %self.settings.directory, "acme: ordering a certificate");
            let result = match tokio::time::timeout(ATTEMPT_TIMEOUT, self.attempt(failures)).await {
                Ok(result) => result,
                Err(_) => Err(Failure::new(
                    Kind::Unreachable,
                    format!("no answer from the ACME CA within {} s", ATTEMPT_TIMEOUT.as_secs()),
                )),
            };
            match result {
                Ok((key, info)) => {
                    failures = 0;
                    if let Ok(mut last) = self.last_error.lock() {
                        *last = None;
                    }
                    if let Ok(mut held) = self.held.lock() {
                        *held = Held { key, info: Some(info.clone()) };
                    }
                    match self.server_config() {
                        Ok(config) => install(config, info.not_after),
                        Err(e) => tracing::error!("acme: cannot use the new certificate: {e:#}"),
                    }
                    self.ready.store(true, Ordering::SeqCst);
                    say(format_args!(
                        "peerlink serve: acme: {} a certificate for {} from {}, valid until {}, renewal from {}",
                        if renewing { "renewed" } else { "obtained" },
                        self.settings.domains.join(", "),
                        self.settings.directory,
                        fmt_utc(info.not_after),
                        fmt_utc(renew_at(info.not_before, info.not_after))
                    ));
                }
                Err(failure) => {
                    failures += 1;
                    let asked = self
                        .retry_after
                        .lock()
                        .ok()
                        .and_then(|mut asked| asked.take())
                        .and_then(|value| peerlink_proto::parse_retry_after(&value, SystemTime::now()));
                    let wait = retry_wait(failures, failure.kind, asked);
                    let hint = self.hint(failure.kind);
                    tracing::error!(
                        "acme: could not get a certificate for {} from {}: {}. {hint} Retrying in {} s{}{}.",
                        self.settings.domains.join(", "),
                        self.settings.directory,
                        failure.message,
                        wait.as_secs(),
                        match asked {
                            Some(asked) => format!(" (the CA's Retry-After asked for {} s)", asked.as_secs()),
                            None => String::new(),
                        },
                        if self.ready() {
                            "; the current certificate is served meanwhile"
                        } else {
                            "; HTTPS answers 503 until then, STUN and TURN are unaffected"
                        }
                    );
                    if let Ok(mut last) = self.last_error.lock() {
                        *last = Some(format!("{} {hint}", failure.message));
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// What to check for a kind of failure.
    fn hint(&self, kind: Kind) -> String {
        let s = &self.settings;
        match kind {
            Kind::Unreachable => format!(
                "Check the directory URL (--acme-directory {}), that this machine can make outbound HTTPS \
                 connections (DNS, firewall, proxy) and, for a private or test CA, --acme-ca-root.",
                s.directory
            ),
            Kind::RateLimited => format!(
                "The CA refuses more requests for now (rate limited); this clears with time, and peerlink waits \
                 as long as the CA asks. Check that the cache folder {} is kept across restarts (an empty one \
                 means a new account and a new order on every start) and that no other server or script orders \
                 certificates for {} from the same CA; a staging directory has higher limits for tests.",
                s.cache.display(),
                s.domains.join(", ")
            ),
            Kind::Challenge => {
                let mut ports = format!("port 443 reaching --http {} (TLS-ALPN-01)", s.https);
                if let Some(http) = s.http {
                    ports.push_str(&format!(" or port 80 reaching --acme-http {http} (HTTP-01)"));
                }
                format!(
                    "Check that the DNS A/AAAA records of {} point at this machine, and {ports} from the internet \
                     (firewall, cloud security group, port forwarding).",
                    s.domains.join(", ")
                )
            }
            Kind::Other => "Check the options given with --acme-*.".to_owned(),
        }
    }

    /// One try: the account (cached or new), an order, its challenges, the certificate.
    async fn attempt(&self, failures: u32) -> Result<(Arc<CertifiedKey>, CertInfo), Failure> {
        let account = match self.account().await {
            Err(failure) => return Err(failure),
            Ok(account) => account,
        };
        match self.order(&account, failures).await {
            Err(failure) if failure.message.contains("accountDoesNotExist") => {
                // The CA forgot the cached account (a test CA restarted): make a new one.
                let _ = std::fs::remove_file(self.account_path());
                let account = self.account().await?;
                self.order(&account, failures).await
            }
            other => other,
        }
    }

    fn account_path(&self) -> PathBuf {
        self.settings.cache.join(format!("account-{}.json", slug(&self.settings.directory)))
    }

    async fn account(&self) -> Result<Account, Failure> {
        let path = self.account_path();
        let http = || -> Result<Box<dyn instant_acme::HttpClient>, Failure> {
            http_client(&self.settings.ca_roots, self.retry_after.clone())
                .map_err(|e| Failure::new(Kind::Other, format!("{e:#}")))
        };
        if let Ok(text) = std::fs::read_to_string(&path) {
            match serde_json::from_str::<AccountCredentials>(&text) {
                Ok(credentials) => {
                    return Account::builder_with_http(http()?)
                        .from_credentials(credentials)
                        .await
                        .map_err(|e| failure("cannot reach the ACME directory", &e));
                }
                Err(e) => tracing::warn!("acme: ignoring the unreadable account in {}: {e}", path.display()),
            }
        }
        let contact = self.settings.email.as_ref().map(|email| format!("mailto:{email}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let new =
            NewAccount { contact: &contacts, terms_of_service_agreed: true, only_return_existing: false };
        let (account, credentials) = Account::builder_with_http(http()?)
            .create(&new, self.settings.directory.clone(), None)
            .await
            .map_err(|e| failure("cannot reach the ACME directory or create an account", &e))?;
        let text = serde_json::to_string_pretty(&credentials).unwrap_or_default();
        if let Err(e) = write_private(&path, text.as_bytes()) {
            tracing::warn!("acme: cannot save the account in {}: {e}", path.display());
        }
        tracing::info!(account = %account.id(), "acme: account created");
        Ok(account)
    }

    async fn order(
        &self,
        account: &Account,
        failures: u32,
    ) -> Result<(Arc<CertifiedKey>, CertInfo), Failure> {
        let identifiers: Vec<Identifier> =
            self.settings.domains.iter().cloned().map(Identifier::Dns).collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| failure("the CA refused the order", &e))?;
        // HTTP-01 first when port 80 is ours; on a retry the other type goes first.
        let mut kinds = vec![ChallengeType::TlsAlpn01];
        if self.settings.http.is_some() {
            kinds.insert(0, ChallengeType::Http01);
        }
        let turn = failures as usize % kinds.len();
        kinds.rotate_left(turn);
        let result = match self.answer(&mut order, &kinds).await {
            Ok(()) => Ok(order.poll_ready(&RetryPolicy::new().timeout(Duration::from_secs(90))).await),
            Err(failure) => Err(failure),
        };
        if let Ok(mut alpn) = self.challenges.alpn.lock() {
            alpn.clear();
        }
        if let Ok(mut http) = self.challenges.http.lock() {
            http.clear();
        }
        match result? {
            Ok(OrderStatus::Ready) => {}
            // An invalid order (pebble, Let's Encrypt) or one with an error: the reasons are in
            // its authorizations' challenges.
            Ok(_) | Err(instant_acme::Error::Api(_)) => {
                let details = challenge_errors(&mut order).await;
                return Err(Failure::new(
                    Kind::Challenge,
                    format!("the CA could not validate the names: {details}"),
                ));
            }
            Err(e) => return Err(failure("validation did not finish", &e)),
        }
        let key = rcgen::KeyPair::generate().map_err(|e| Failure::new(Kind::Other, format!("key: {e}")))?;
        let mut params = rcgen::CertificateParams::new(self.settings.domains.clone())
            .map_err(|e| Failure::new(Kind::Other, format!("csr: {e}")))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr =
            params.serialize_request(&key).map_err(|e| Failure::new(Kind::Other, format!("csr: {e}")))?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| failure("the CA refused to finalize the order", &e))?;
        let chain = order
            .poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(90)))
            .await
            .map_err(|e| failure("the CA did not issue the certificate", &e))?;
        let key_pem = key.serialize_pem();
        let (certified, info) = certified_key(chain.as_bytes(), key_pem.as_bytes())
            .map_err(|e| Failure::new(Kind::Other, format!("the CA's certificate is unusable: {e:#}")))?;
        let (cert_path, key_path) = cert_paths(&self.settings);
        if let Err(e) = make_private_dir(cert_path.parent().unwrap_or(&self.settings.cache))
            .and_then(|()| write_private(&key_path, key_pem.as_bytes()))
            .and_then(|()| write_private(&cert_path, chain.as_bytes()))
        {
            tracing::warn!("acme: cannot save the certificate in {}: {e}", cert_path.display());
        }
        Ok((certified, info))
    }

    /// Sets up an answer for each pending authorization and tells the CA it is ready.
    async fn answer(&self, order: &mut instant_acme::Order, kinds: &[ChallengeType]) -> Result<(), Failure> {
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization =
                authorization.map_err(|e| failure("cannot fetch the order's authorizations", &e))?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                status => {
                    return Err(Failure::new(
                        Kind::Challenge,
                        format!("the authorization for {} is {status:?}", authorization.identifier()),
                    ))
                }
            }
            let offered: Vec<ChallengeType> =
                authorization.challenges.iter().map(|c| c.r#type.clone()).collect();
            let Some(kind) = kinds.iter().find(|k| offered.contains(k)).cloned() else {
                return Err(Failure::new(
                    Kind::Other,
                    format!("the CA offers none of the challenges peerlink answers ({kinds:?}); it offers {offered:?}"),
                ));
            };
            let mut challenge = authorization
                .challenge(kind.clone())
                .ok_or_else(|| Failure::new(Kind::Other, "challenge vanished"))?;
            let name = challenge.identifier().to_string();
            let key_authorization = challenge.key_authorization();
            match kind {
                ChallengeType::TlsAlpn01 => {
                    let answer = alpn_certificate(&name, key_authorization.digest().as_ref())
                        .map_err(|e| Failure::new(Kind::Other, format!("tls-alpn-01 certificate: {e:#}")))?;
                    if let Ok(mut alpn) = self.challenges.alpn.lock() {
                        alpn.insert(name.clone(), answer);
                    }
                }
                _ => {
                    if let Ok(mut http) = self.challenges.http.lock() {
                        http.insert(challenge.token.clone(), key_authorization.as_str().to_owned());
                    }
                }
            }
            tracing::info!(name = %name, challenge = ?kind, "acme: answering");
            challenge.set_ready().await.map_err(|e| failure("the CA refused the challenge", &e))?;
        }
        Ok(())
    }
}

/// The challenge errors of an order's authorizations, as the CA explains them.
async fn challenge_errors(order: &mut instant_acme::Order) -> String {
    let mut details = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let Ok(mut authorization) = authorization else { continue };
        let Ok(state) = authorization.refresh().await else { continue };
        if state.status == AuthorizationStatus::Valid {
            continue;
        }
        let name = state.identifier().to_string();
        for challenge in &state.challenges {
            if let Some(problem) = &challenge.error {
                details.push(format!("{name} by {:?}: {}", challenge.r#type, problem_text(problem)));
            }
        }
    }
    if details.is_empty() {
        "the CA gave no reason".to_owned()
    } else {
        details.join("; ")
    }
}

fn problem_text(problem: &Problem) -> String {
    let mut text = problem.detail.clone().unwrap_or_else(|| "no detail".to_owned());
    if let Some(kind) = &problem.r#type {
        text.push_str(&format!(" ({})", kind.trim_start_matches("urn:ietf:params:acme:error:")));
    }
    for sub in &problem.subproblems {
        text.push_str(&format!("; {}", sub.detail.clone().unwrap_or_default()));
    }
    text
}

/// An instant-acme error as a failure: the CA's problem document when there is one, else the
/// whole chain of causes (a refused connection, an untrusted certificate).
fn failure(what: &str, error: &instant_acme::Error) -> Failure {
    match error {
        instant_acme::Error::Api(problem) => {
            let kind = match problem.r#type.as_deref() {
                Some(t) if t.ends_with(":rateLimited") => Kind::RateLimited,
                Some(t)
                    if t.ends_with(":connection") || t.ends_with(":dns") || t.ends_with(":unauthorized") =>
                {
                    Kind::Challenge
                }
                Some(t) if t.ends_with(":incorrectResponse") || t.ends_with(":tls") => Kind::Challenge,
                _ => Kind::Other,
            };
            let mut text = format!("{what}: {}", problem_text(problem));
            if problem.r#type.as_deref().is_some_and(|t| t.ends_with(":accountDoesNotExist")) {
                text.push_str(" accountDoesNotExist");
            }
            Failure::new(kind, text)
        }
        instant_acme::Error::Hyper(_) | instant_acme::Error::Other(_) | instant_acme::Error::Http(_) => {
            Failure::new(Kind::Unreachable, format!("{what}: {}", error_chain(error)))
        }
        _ => Failure::new(Kind::Other, format!("{what}: {}", error_chain(error))),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// How long to wait after `failures` failed attempts in a row: 10 s doubling to an hour;
/// never sooner than the CA's `Retry-After` (RFC 8555 §6.6) asks, up to a day; and when the
/// CA says rate-limited without saying how long, an hour at least.
fn retry_wait(failures: u32, kind: Kind, retry_after: Option<Duration>) -> Duration {
    let backoff = FIRST_RETRY.saturating_mul(1 << failures.saturating_sub(1).min(12)).min(MAX_RETRY);
    match retry_after {
        Some(asked) => backoff.max(asked.min(MAX_RETRY_AFTER)),
        None if kind == Kind::RateLimited => backoff.max(MAX_RETRY),
        None => backoff,
    }
}

/// The CA's HTTPS client, keeping the `Retry-After` of each error answer: instant-acme's
/// errors carry the problem document only.
struct Watched {
    inner: Box<dyn instant_acme::HttpClient>,
    retry_after: Arc<Mutex<Option<String>>>,
}

impl instant_acme::HttpClient for Watched {
    fn request(
        &self,
        request: axum::http::Request<instant_acme::BodyWrapper<bytes::Bytes>>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<instant_acme::BytesResponse, instant_acme::Error>> + Send,
        >,
    > {
        let response = self.inner.request(request);
        let slot = self.retry_after.clone();
        Box::pin(async move {
            let response = response.await?;
            if !response.parts.status.is_success() {
                let value = response.parts.headers.get(axum::http::header::RETRY_AFTER);
                if let (Some(value), Ok(mut slot)) = (value.and_then(|v| v.to_str().ok()), slot.lock()) {
                    *slot = Some(value.to_owned());
                }
            }
            Ok(response)
        })
    }
}

/// The HTTPS client for the CA: the system's roots plus `--acme-ca-root`'s; error answers'
/// `Retry-After` goes to `retry_after`.
fn http_client(
    extra: &[PathBuf],
    retry_after: Arc<Mutex<Option<String>>>,
) -> anyhow::Result<Box<dyn instant_acme::HttpClient>> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    for path in extra {
        for cert in load_roots(path)? {
            roots.add(cert).with_context(|| format!("bad root certificate in {}", path.display()))?;
        }
    }
    if roots.is_empty() {
        anyhow::bail!(
            "no trusted root certificates for the ACME CA: install ca-certificates, or give --acme-ca-root"
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("tls versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().build();
    let client: hyper_util::client::legacy::Client<_, instant_acme::BodyWrapper<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
    Ok(Box::new(Watched { inner: Box::new(client), retry_after }))
}

fn load_roots(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read --acme-ca-root {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad PEM in --acme-ca-root {}", path.display()))?;
    if roots.is_empty() {
        anyhow::bail!("no certificate in --acme-ca-root {}", path.display());
    }
    Ok(roots)
}

/// The TLS-ALPN-01 answer for `name` (RFC 8737 §3): self-signed, for `name` only, with the
/// critical acmeIdentifier extension holding SHA-256 of the key authorization.
fn alpn_certificate(name: &str, digest: &[u8]) -> anyhow::Result<Arc<CertifiedKey>> {
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    certified(vec![cert.der().clone()], &key)
}

/// Served until the CA's certificate arrives, so that TLS clients get an answer (a browser a
/// warning, then the 503 that says why).
fn placeholder(domains: &[String]) -> anyhow::Result<Arc<CertifiedKey>> {
    let mut params = rcgen::CertificateParams::new(domains.to_vec())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, "peerlink: waiting for the ACME certificate");
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    certified(vec![cert.der().clone()], &key)
}

fn certified(chain: Vec<CertificateDer<'static>>, key: &rcgen::KeyPair) -> anyhow::Result<Arc<CertifiedKey>> {
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = rustls::crypto::ring::sign::any_supported_type(&der).context("unsupported key")?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// A PEM chain and key as a served certificate, with its names and validity.
fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<(Arc<CertifiedKey>, CertInfo)> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(chain_pem).collect::<Result<_, _>>().context("bad certificate PEM")?;
    let first = chain.first().context("no certificate")?;
    let info = CertInfo::parse(first)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("bad key PEM")?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).context("unsupported key")?;
    Ok((Arc::new(CertifiedKey::new(chain, signing)), info))
}

/// Where the certificate for these names from this CA is kept.
fn cert_paths(settings: &Settings) -> (PathBuf, PathBuf) {
    let dir = settings.cache.join(slug(&settings.directory));
    let base = settings.domains[0].clone();
    (dir.join(format!("{base}.crt.pem")), dir.join(format!("{base}.key.pem")))
}

/// The cached certificate, if it covers every name and has not expired.
fn load_cached(settings: &Settings) -> Option<Held> {
    let (cert_path, key_path) = cert_paths(settings);
    let (chain, key) = (std::fs::read(&cert_path).ok()?, std::fs::read(&key_path).ok()?);
    let (key, info) = match certified_key(&chain, &key) {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::warn!("acme: ignoring the cached certificate {}: {e:#}", cert_path.display());
            return None;
        }
    };
    if !settings.domains.iter().all(|d| info.dns_names.contains(d)) {
        tracing::info!("acme: the cached certificate is for {:?}, not every --acme-domain", info.dns_names);
        return None;
    }
    if info.not_after <= unix_now() {
        tracing::info!("acme: the cached certificate expired at {}", fmt_utc(info.not_after));
        return None;
    }
    Some(Held { key, info: Some(info) })
}

/// When a certificate is renewed: at 2/3 of its life.
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before).max(0) * 2 / 3
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A file name part for a URL: its host and path, other characters as `_`.
fn slug(url: &str) -> String {
    let bare = url.split_once("://").map_or(url, |(_, rest)| rest);
    bare.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect()
}

fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Writes a file readable by its owner only, whole or not at all (a temporary, then a rename).
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// `2025-06-01 12:00:00 UTC` for seconds since the epoch.
pub fn fmt_utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The `--acme-http` listener (port 80): HTTP-01 answers, and a redirect to https for
/// everything else (a 503 saying why while there is no certificate yet).
pub fn http_router(acme: Arc<Acme>) -> axum::Router {
    use axum::extract::{Path as UrlPath, Request};
    use axum::http::{header, StatusCode};
    use axum::response::{IntoResponse, Response};
    let challenges = acme.challenges();
    let https_port = acme.settings.https.port();
    let first = acme.settings.domains[0].clone();
    let redirect = move |request: Request| {
        let acme = acme.clone();
        let first = first.clone();
        async move {
            if !acme.ready() {
                return (StatusCode::SERVICE_UNAVAILABLE, acme.waiting_message()).into_response();
            }
            let host = request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| h.split(':').next().unwrap_or_default().to_ascii_lowercase())
                .filter(|h| acme.settings.domains.contains(h))
                .unwrap_or(first);
            let port = if https_port == 443 { String::new() } else { format!(":{https_port}") };
            let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
            let location = format!("https://{host}{port}{path}");
            Response::builder()
                .status(StatusCode::PERMANENT_REDIRECT)
                .header(header::LOCATION, location)
                .body(axum::body::Body::empty())
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
    };
    axum::Router::new()
        .route(
            "/.well-known/acme-challenge/{token}",
            axum::routing::get(move |UrlPath(token): UrlPath<String>| {
                let challenges = challenges.clone();
                async move {
                    match challenges.http_answer(&token) {
                        Some(answer) => (StatusCode::OK, answer).into_response(),
                        None => StatusCode::NOT_FOUND.into_response(),
                    }
                }
            }),
        )
        .fallback(redirect)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(cache: &Path) -> Settings {
        Settings::new(
            &["Meet.Example.test".into(), "meet.example.test".into(), "b.example.test".into()],
            Some("admin@example.test"),
            Some("https://127.0.0.1:14000/dir"),
            &[],
            Some(cache),
            "127.0.0.1:443".parse().unwrap(),
            None,
        )
        .unwrap()
    }

    #[test]
    fn checks_the_options() {
        let dir = std::env::temp_dir();
        let s = settings(&dir);
        assert_eq!(s.domains, ["meet.example.test", "b.example.test"]);
        let bad = |domains: &[&str], email: Option<&str>, directory: Option<&str>| {
            let domains: Vec<String> = domains.iter().map(|d| d.to_string()).collect();
            Settings::new(&domains, email, directory, &[], Some(&dir), "127.0.0.1:443".parse().unwrap(), None)
                .is_err()
        };
        assert!(bad(&[], None, None));
        assert!(bad(&["192.0.2.1"], None, None));
        assert!(bad(&["*.example.org"], None, None));
        assert!(bad(&["https://example.org"], None, None));
        assert!(bad(&["example.org"], Some("not-an-address"), None));
        assert!(bad(&["example.org"], None, Some("http://insecure.example/dir")));
        assert!(!bad(&["example.org"], None, None));
        let missing_root = Settings::new(
            &["example.org".into()],
            None,
            None,
            &[PathBuf::from("/nonexistent/root.pem")],
            Some(&dir),
            "127.0.0.1:443".parse().unwrap(),
            None,
        );
        assert!(format!("{:#}", missing_root.unwrap_err()).contains("--acme-ca-root"));
        assert_eq!(
            Settings::new(
                &["example.org".into()],
                None,
                None,
                &[],
                Some(&dir),
                "127.0.0.1:443".parse().unwrap(),
                None
            )
            .unwrap()
            .directory,
            LETS_ENCRYPT
        );
    }

    #[test]
    fn renews_at_two_thirds_of_the_life() {
        assert_eq!(renew_at(0, 90 * 86_400), 60 * 86_400);
        assert_eq!(renew_at(1000, 1030), 1020);
        assert_eq!(renew_at(1000, 900), 1000);
    }

    #[test]
    fn backs_off_and_honours_retry_after() {
        let secs = Duration::from_secs;
        let waits: Vec<u64> = (1..=11).map(|n| retry_wait(n, Kind::Unreachable, None).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]);
        assert_eq!(retry_wait(u32::MAX, Kind::Challenge, None), MAX_RETRY);
        // Rate limited without Retry-After: an hour at least.
        assert_eq!(retry_wait(1, Kind::RateLimited, None), secs(3600));
        // Retry-After: never sooner than the CA asks, the backoff still growing beyond it.
        assert_eq!(retry_wait(1, Kind::RateLimited, Some(secs(15))), secs(15));
        assert_eq!(retry_wait(2, Kind::RateLimited, Some(secs(15))), secs(20));
        assert_eq!(retry_wait(1, Kind::Other, Some(secs(7200))), secs(7200));
        assert_eq!(retry_wait(1, Kind::Unreachable, Some(Duration::ZERO)), secs(10));
        // A CA asking for a week gets a day: the certificate could expire meanwhile.
        assert_eq!(retry_wait(1, Kind::RateLimited, Some(secs(7 * 86_400))), secs(86_400));
    }

    #[test]
    fn formats_times() {
        assert_eq!(fmt_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(fmt_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(fmt_utc(1_767_225_599), "2025-12-31 23:59:59 UTC");
    }

    #[test]
    fn slugs_directory_urls() {
        assert_eq!(
            slug("https://acme-v02.api.letsencrypt.org/directory"),
            "acme-v02.api.letsencrypt.org_directory"
        );
        assert_eq!(slug("https://127.0.0.1:14000/dir"), "127.0.0.1_14000_dir");
    }

    #[test]
    fn answers_tls_alpn_01_only_to_validation_handshakes() {
        let dir = std::env::temp_dir().join(format!("peerlink-acme-test-{}", std::process::id()));
        let acme = Acme::new(settings(&dir)).unwrap();
        assert!(!acme.ready(), "no cache: a placeholder");
        assert!(acme.waiting_message().contains("no certificate for meet.example.test, b.example.test yet"));
        let answer = alpn_certificate("meet.example.test", &[7; 32]).unwrap();
        acme.challenges.alpn.lock().unwrap().insert("meet.example.test".into(), answer.clone());
        // A handshake through rustls itself: the validator's offers acme-tls/1 only.
        let handshake = |alpn: Vec<Vec<u8>>| -> Vec<u8> {
            let server_config = acme.server_config().unwrap();
            let mut server_config = (*server_config).clone();
            server_config.alpn_protocols = vec![b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
            let mut server = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut client_config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAll))
                .with_no_client_auth();
            client_config.alpn_protocols = alpn;
            let name = rustls::pki_types::ServerName::try_from("meet.example.test").unwrap();
            let mut client = rustls::ClientConnection::new(Arc::new(client_config), name).unwrap();
            for _ in 0..10 {
                let mut buf = Vec::new();
                while client.wants_write() {
                    client.write_tls(&mut buf).unwrap();
                }
                server.read_tls(&mut &buf[..]).unwrap();
                server.process_new_packets().unwrap();
                buf.clear();
                while server.wants_write() {
                    server.write_tls(&mut buf).unwrap();
                }
                client.read_tls(&mut &buf[..]).unwrap();
                client.process_new_packets().unwrap();
            }
            client.peer_certificates().unwrap()[0].to_vec()
        };
        assert_eq!(handshake(vec![ACME_TLS_ALPN.to_vec()]), answer.cert[0].to_vec());
        let served = handshake(vec![b"http/1.1".to_vec()]);
        assert_ne!(served, answer.cert[0].to_vec());
        let info = CertInfo::parse(&CertificateDer::from(served)).unwrap();
        assert_eq!(
            info.dns_names,
            ["meet.example.test", "b.example.test"],
            "the placeholder names the domains"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[derive(Debug)]
    struct AcceptAll;

    impl rustls::client::danger::ServerCertVerifier for AcceptAll {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }

        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
        }
    }
}
