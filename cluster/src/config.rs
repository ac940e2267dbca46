//! Each part's config file, with the keys `deploy/config/<part>.toml` documents. Every file
//! holds a credential, so each is written readable by its owner only; the config file is the
//! whole of a part's configuration (no `SHOAL_*` variable reaches the processes).
//!
//! Every file has a `[tls]` table: the part's certificate, key and the cluster's CA when the
//! cluster runs over TLS (the proxy presents a certificate only when it serves HTTPS), and
//! `plaintext = true` otherwise, since a part without one refuses to start.

use std::fmt::Write as _;

use crate::credentials::{Credentials, PROXY_USER};
use crate::dir::ClusterDir;
use crate::spec::{Backend, Member, Plan, Role, Spec, toml_str};
use crate::tls::Pki;

/// A TOML multi-line literal string of a PEM text (PEM holds no `'''`).
fn pem(text: &str) -> String {
    format!("'''\n{}\n'''", text.trim_end())
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| toml_str(s)).collect();
    format!("[{}]", quoted.join(", "))
}

fn path(p: &std::path::Path) -> String {
    toml_str(&p.to_string_lossy())
}

fn header(part: &str) -> String {
    format!(
        "# Written by Shoal's cluster launcher (deploy/devcluster.sh, the tests, the benchmarks);\n\
         # deploy/config/{part}.toml documents every key.\n"
    )
}

/// The config file text of `member`; `pki` is the cluster's TLS files when it runs over TLS.
pub fn render(
    spec: &Spec,
    plan: &Plan,
    member: &Member,
    dir: &ClusterDir,
    creds: &Credentials,
    pki: Option<&Pki>,
) -> String {
    let origins = list(&plan.origin_urls());
    let mut c = header(member.role.as_str());
    // `write!` to a String cannot fail.
    let _ = match member.role {
        Role::Origin => write_origin(&mut c, spec, member, dir, creds, &origins),
        Role::Tracker => write_tracker(&mut c, spec, member, creds, &origins),
        Role::Proxy => write_proxy(&mut c, spec, member, dir, creds, &origins),
        Role::Agent => write_agent(&mut c, spec, plan, member, dir, creds, &origins),
    }
    .and_then(|()| write_tls(&mut c, spec, member, pki));
    c
}

fn write_tls(c: &mut String, spec: &Spec, m: &Member, pki: Option<&Pki>) -> std::fmt::Result {
    writeln!(c, "\n[tls]")?;
    let Some(pki) = pki.filter(|_| spec.tls) else {
        writeln!(
            c,
            "# Every byte between the parts in clear: a cluster on this machine alone (up --tls)."
        )?;
        return writeln!(c, "plaintext = true");
    };
    let files = pki.files(&m.name);
    let presents = match m.role {
        Role::Proxy => spec.proxy_tls,
        Role::Origin | Role::Tracker | Role::Agent => true,
    };
    if m.role == Role::Agent {
        writeln!(
            c,
            "# For the peer protocol and calls to the origins and the tracker; the registry API\n\
             # stays plain HTTP on loopback, where docker and containerd reach it."
        )?;
    }
    if m.role == Role::Proxy && !presents {
        writeln!(
            c,
            "# No certificate: the registry is plain HTTP on loopback (up --proxy-tls serves HTTPS)."
        )?;
    }
    if presents && let (Some(cert), Some(key)) = (&files.cert, &files.key) {
        writeln!(c, "cert = {}", path(cert))?;
        writeln!(c, "key = {}", path(key))?;
    }
    writeln!(c, "ca = {}", path(&pki.ca()))
}

fn write_origin(
    c: &mut String,
    spec: &Spec,
    m: &Member,
    dir: &ClusterDir,
    creds: &Credentials,
    origins: &str,
) -> std::fmt::Result {
    writeln!(c, "listen = {}", toml_str(&m.addr))?;
    writeln!(c, "data_dir = {}", path(&dir.data(&m.name)))?;
    writeln!(c, "advertise_url = {}", toml_str(&m.url()))?;
    writeln!(c, "replicas = {}", spec.replicas)?;
    writeln!(c, "shutdown_grace = \"2s\"")?;
    writeln!(c, "\n[credentials]")?;
    writeln!(c, "write_token = {}", toml_str(&creds.write_token))?;
    writeln!(c, "read_token = {}", toml_str(&creds.read_token))?;
    writeln!(c, "metainfo_key = {}", pem(&creds.metainfo_key_pem))?;
    writeln!(c, "\n[cluster]\nmembers = {origins}")?;
    writeln!(c, "\n[backend]")?;
    match spec.backend {
        Backend::Shared => {
            writeln!(c, "kind = \"filesystem\"")?;
            writeln!(
                c,
                "# One directory for all origins, as a shared bucket would be."
            )?;
            writeln!(c, "path = {}", path(&dir.data("backend")))?;
        }
        Backend::None => writeln!(c, "kind = \"none\"")?,
    }
    write_peer(c, m, spec)
}

fn write_peer(c: &mut String, m: &Member, spec: &Spec) -> std::fmt::Result {
    writeln!(c, "\n[peer]")?;
    if let Some(peer) = &m.peer {
        writeln!(c, "listen = {}", toml_str(peer))?;
    }
    writeln!(
        c,
        "# Bytes per second over the peer protocol, 0 = unlimited (up --rate)."
    )?;
    writeln!(c, "egress = {}", spec.rate.toml())?;
    writeln!(c, "ingress = {}", spec.rate.toml())
}

fn write_tracker(
    c: &mut String,
    spec: &Spec,
    m: &Member,
    creds: &Credentials,
    origins: &str,
) -> std::fmt::Result {
    writeln!(c, "listen = {}", toml_str(&m.addr))?;
    writeln!(c, "origins = {origins}")?;
    writeln!(c, "replicas = {}", spec.replicas)?;
    if let Some(every) = spec.announce_interval {
        writeln!(
            c,
            "# Short, so that agents that start a download together find each other quickly."
        )?;
        writeln!(
            c,
            "announce_interval = \"{}\"",
            humantime::format_duration(every)
        )?;
    }
    writeln!(c, "shutdown_grace = \"2s\"")?;
    writeln!(c, "\n[credentials]")?;
    writeln!(c, "read_token = {}", toml_str(&creds.read_token))
}

fn write_proxy(
    c: &mut String,
    spec: &Spec,
    m: &Member,
    dir: &ClusterDir,
    creds: &Credentials,
    origins: &str,
) -> std::fmt::Result {
    writeln!(c, "listen = {}", toml_str(&m.addr))?;
    writeln!(c, "origins = {origins}")?;
    writeln!(c, "shutdown_grace = \"2s\"")?;
    writeln!(c, "\n[credentials]")?;
    writeln!(c, "write_token = {}", toml_str(&creds.write_token))?;
    if spec.proxy_login {
        writeln!(c, "\n[auth]")?;
        writeln!(
            c,
            "# Pushes need the login (user {PROXY_USER}, password in {}); pulls do not.",
            dir.secret("proxy-password").display()
        )?;
        writeln!(c, "htpasswd = {}", path(&dir.secret("htpasswd")))?;
        writeln!(c, "anonymous_pull = true")?;
    }
    writeln!(c, "\n[uploads]")?;
    writeln!(c, "spool_dir = {}", path(&dir.data(&m.name)))
}

fn write_agent(
    c: &mut String,
    spec: &Spec,
    plan: &Plan,
    m: &Member,
    dir: &ClusterDir,
    creds: &Credentials,
    origins: &str,
) -> std::fmt::Result {
    let tracker = plan
        .of(Role::Tracker)
        .next()
        .map_or(String::new(), Member::url);
    writeln!(c, "listen = {}", toml_str(&m.addr))?;
    if tracker.is_empty() {
        writeln!(c, "# No tracker: the origins are the only peers.")?;
    }
    writeln!(c, "tracker = {}", toml_str(&tracker))?;
    writeln!(c, "origins = {origins}")?;
    writeln!(c, "shutdown_grace = \"2s\"")?;
    writeln!(c, "\n[credentials]")?;
    writeln!(c, "read_token = {}", toml_str(&creds.read_token))?;
    writeln!(c, "metainfo_keys = {}", pem(&creds.metainfo_pub_pem))?;
    writeln!(c, "\n[cache]")?;
    writeln!(c, "dir = {}", path(&dir.data(&m.name)))?;
    writeln!(c, "max_size = {}", toml_str(&spec.cache_size.to_string()))?;
    write_peer(c, m, spec)?;
    if let Some(stall) = spec.stall_timeout {
        writeln!(c, "\n[swarm]")?;
        writeln!(c, "stall_timeout = \"{}s\"", stall.as_secs())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Rate;

    #[test]
    fn every_config_is_toml_with_the_shared_vocabulary() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = ClusterDir::new(tmp.path());
        let creds = Credentials::ensure(&dir).unwrap_or_else(|e| panic!("{e}"));
        let spec = Spec::local(1, Rate::parse("20MiB").unwrap_or_else(|| panic!("rate")));
        let plan = Plan::new(&spec).unwrap_or_else(|e| panic!("{e}"));
        for m in &plan.members {
            let text = render(&spec, &plan, m, &dir, &creds, None);
            let t: toml::Table = text
                .parse()
                .unwrap_or_else(|e| panic!("{}: {e}\n{text}", m.name));
            assert_eq!(t["listen"].as_str(), Some(m.addr.as_str()), "{text}");
            if let Some(peer) = &m.peer {
                assert_eq!(t["peer"]["listen"].as_str(), Some(peer.as_str()));
                assert_eq!(t["peer"]["egress"].as_str(), Some("20MiB"));
            }
            // A part refuses to start without a [tls] table: plain mode says so.
            assert_eq!(t["tls"]["plaintext"].as_bool(), Some(true), "{text}");
            assert_eq!(t["tls"].as_table().map(toml::Table::len), Some(1));
        }
        let origin = render(&spec, &plan, &plan.members[0], &dir, &creds, None);
        let t: toml::Table = origin.parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t["advertise_url"].as_str(), Some("http://127.0.0.1:9000"));
        assert_eq!(
            t["credentials"]["metainfo_key"].as_str().map(str::trim),
            Some(creds.metainfo_key_pem.trim())
        );
        let tracker = render(&spec, &plan, &plan.members[3], &dir, &creds, None);
        assert!(tracker.contains("announce_interval = \"1s\""), "{tracker}");
        let agent = render(&spec, &plan, &plan.members[5], &dir, &creds, None);
        assert!(
            agent.contains("tracker = \"http://127.0.0.1:7070\"")
                && !agent.contains(&creds.write_token)
        );
    }

    fn parsed(text: &str) -> toml::Table {
        text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn url_list(v: &toml::Value) -> Vec<&str> {
        v.as_array()
            .map(|a| a.iter().filter_map(toml::Value::as_str).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_tls_cluster_gives_each_part_its_files_and_https_between_parts() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = ClusterDir::new(tmp.path());
        let creds = Credentials::ensure(&dir).unwrap_or_else(|e| panic!("{e}"));
        for proxy_tls in [false, true] {
            let mut spec = Spec::local(2, Rate::unlimited());
            spec.tls = true;
            spec.proxy_tls = proxy_tls;
            let plan = Plan::new(&spec).unwrap_or_else(|e| panic!("{e}"));
            let pki =
                crate::tls::Pki::ensure(&dir, &plan.members).unwrap_or_else(|e| panic!("{e}"));
            let ca = pki.ca().to_string_lossy().into_owned();
            let https_origins: Vec<String> = local_origins("https");
            for m in &plan.members {
                let t = parsed(&render(&spec, &plan, m, &dir, &creds, Some(&pki)));
                let tls = t["tls"].as_table().unwrap_or_else(|| panic!("{t}"));
                assert_eq!(tls["ca"].as_str(), Some(ca.as_str()), "{}", m.name);
                assert!(!tls.contains_key("plaintext"));
                let presents = m.role != Role::Proxy || proxy_tls;
                assert_eq!(tls.contains_key("cert"), presents, "{}: {t}", m.name);
                assert_eq!(tls.contains_key("key"), presents, "{}: {t}", m.name);
                if presents {
                    let cert = tls["cert"].as_str().unwrap_or_default();
                    assert!(cert.ends_with(&format!("tls/{}.crt", m.name)), "{cert}");
                }
                let origins = t
                    .get("origins")
                    .or_else(|| t.get("cluster").map(|c| &c["members"]));
                let origins = origins.map(url_list).unwrap_or_default();
                assert_eq!(origins, https_origins, "{}", m.name);
            }
            let origin = parsed(&render(
                &spec,
                &plan,
                &plan.members[0],
                &dir,
                &creds,
                Some(&pki),
            ));
            assert_eq!(
                origin["advertise_url"].as_str(),
                Some("https://127.0.0.1:9000")
            );
            let agent = parsed(&render(
                &spec,
                &plan,
                &plan.members[5],
                &dir,
                &creds,
                Some(&pki),
            ));
            assert_eq!(agent["tracker"].as_str(), Some("https://127.0.0.1:7070"));
            assert_eq!(agent["listen"].as_str(), Some("127.0.0.1:8081"));
            assert_eq!(
                plan.members[4].url(),
                if proxy_tls {
                    "https://127.0.0.1:5000"
                } else {
                    "http://127.0.0.1:5000"
                }
            );
        }
        // Without TLS the proxy serves no HTTPS either.
        let mut spec = Spec::local(1, Rate::unlimited());
        spec.proxy_tls = true;
        assert!(Plan::new(&spec).is_err());
    }

    fn local_origins(scheme: &str) -> Vec<String> {
        crate::spec::local::ORIGIN_ADDRS
            .iter()
            .map(|a| format!("{scheme}://{a}"))
            .collect()
    }
}
