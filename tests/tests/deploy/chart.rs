//! The chart: every value set renders what it asks for, each part is given the addresses
//! of the rendered Services and pods, every selector matches, every pod runs restricted.

use super::*;

#[test]
fn every_value_set_renders_what_it_asks_for_and_bad_values_are_refused() {
    let r = rendered();
    let names: BTreeSet<&str> = r.sets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        VALUE_SETS.into_iter().collect(),
        "value sets rendered"
    );
    for s in &r.sets {
        let agent = s.name != "no-agent";
        for part in PARTS {
            let expected = part != "agent" || agent;
            assert_eq!(s.workload(part).is_some(), expected, "[{}] {part}", s.name);
            assert_eq!(
                s.component("ConfigMap", part).is_some(),
                expected,
                "[{}] {part} ConfigMap",
                s.name
            );
        }
        let pdbs = s.kind("PodDisruptionBudget").count();
        assert_eq!(pdbs, if s.name == "small" { 0 } else { 3 }, "[{}]", s.name);
        assert_eq!(
            s.kind("Ingress").count(),
            usize::from(s.name == "ingress"),
            "[{}]",
            s.name
        );
        assert_eq!(
            s.kind("ServiceMonitor").count(),
            if s.name == "ingress" { 3 } else { 0 },
            "[{}]",
            s.name
        );
        let pull = if agent {
            "localhost:8081/app:tag"
        } else {
            "docker pull"
        };
        assert!(
            s.notes.contains("docker push") && s.notes.contains(pull),
            "[{}] NOTES.txt must say how to push and pull:\n{}",
            s.name,
            s.notes
        );
    }
    for case in [
        "managed key in origin.config",
        "misspelt top-level key",
        "credentials in tracker.config",
        "insecure in origin.config",
        "insecure in agent.config",
        "node CIDR without a prefix length",
        "tls in origin.config",
        "tls in agent.config",
        "cert-manager without an issuer",
        "cert-manager issuer of an unknown kind",
    ] {
        assert!(r.refused.contains_key(case), "{case} was not refused");
    }
}

#[test]
fn every_part_is_given_the_addresses_of_the_rendered_services_and_pods() {
    for s in &rendered().sets {
        let ns = &s.namespace;
        let sts = s.workload("origin").unwrap();
        let sts_name = sts["metadata"]["name"].as_str().unwrap();
        let headless_name = sts["spec"]["serviceName"].as_str().unwrap();
        let headless = s
            .kind("Service")
            .find(|o| o["metadata"]["name"] == headless_name)
            .unwrap_or_else(|| panic!("[{}] no Service {headless_name}", s.name));
        assert_eq!(headless["spec"]["clusterIP"], "None", "[{}]", s.name);
        assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
        assert!(selects(
            &headless["spec"]["selector"],
            &sts["spec"]["template"]["metadata"]["labels"]
        ));
        let origin_c = containers(sts).next().unwrap();
        let http_port = container_port(origin_c, "http").unwrap();
        let svc_http = headless["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "http")
            .unwrap();
        assert_eq!(svc_http["port"].as_u64(), Some(http_port));

        // The member list: every pod of the StatefulSet by its DNS name, in every config.
        let replicas = sts["spec"]["replicas"].as_u64().unwrap();
        let scheme = s.scheme();
        let members: Vec<String> = (0..replicas)
            .map(|i| {
                format!(
                    "{scheme}://{sts_name}-{i}.{headless_name}.{ns}.svc.cluster.local:{http_port}"
                )
            })
            .collect();
        let origin = s.config("origin");
        assert_eq!(
            str_list(origin.get("cluster").and_then(|c| c.get("members"))),
            members,
            "[{}] origin cluster.members",
            s.name
        );
        assert_eq!(port_of(origin["listen"].as_str().unwrap()), http_port);
        for (i, member) in members.iter().enumerate() {
            let env = pod_env(s, origin_c, &format!("{sts_name}-{i}"));
            let advertise = env.iter().find(|(k, _)| k == "SHOAL_ORIGIN_ADVERTISE_URL");
            assert_eq!(
                advertise.map(|(_, v)| v),
                Some(member),
                "[{}] origin {i} advertises itself as in the member list",
                s.name
            );
        }
        let tracker = s.config("tracker");
        let proxy = s.config("proxy");
        assert_eq!(str_list(tracker.get("origins")), members, "[{}]", s.name);
        assert_eq!(str_list(proxy.get("origins")), members, "[{}]", s.name);
        assert_eq!(
            tracker.get("replicas"),
            origin.get("replicas"),
            "[{}] tracker and origins agree on copies per blob",
            s.name
        );

        // The tracker's and the proxy's Services reach their pods' listen ports.
        for part in ["tracker", "proxy"] {
            let w = s.workload(part).unwrap();
            let c = containers(w).next().unwrap();
            let listen = s.config(part)["listen"].as_str().unwrap().to_owned();
            assert_eq!(container_port(c, "http"), Some(port_of(&listen)));
            let svcs = s.service_selecting(w);
            assert_eq!(svcs.len(), 1, "[{}] one Service for {part}", s.name);
            assert_eq!(svcs[0]["spec"]["ports"][0]["targetPort"], "http");
        }

        // The htpasswd file the proxy's config names is where the pod mounts the Secret.
        let proxy_w = s.workload("proxy").unwrap();
        if let Some(file) = lookup(&proxy, "auth.htpasswd").and_then(|v| v.as_str()) {
            let (dir, key) = file.rsplit_once('/').unwrap();
            let c = containers(proxy_w).next().unwrap();
            let mount = c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["mountPath"] == dir)
                .unwrap_or_else(|| panic!("[{}] nothing mounted at {dir}", s.name));
            let vol = pod_spec(proxy_w)["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap();
            assert_eq!(vol["secret"]["items"][0]["path"], key, "[{}]", s.name);
        }
        // The internal token: origins require what the proxy presents.
        let token_secret = |w: &Value, var: &str| {
            containers(w).next().unwrap()["env"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["name"] == var)
                .map(|e| e["valueFrom"]["secretKeyRef"].clone())
        };
        assert_eq!(
            token_secret(sts, "SHOAL_ORIGIN_CREDENTIALS__WRITE_TOKEN"),
            token_secret(proxy_w, "SHOAL_PROXY_CREDENTIALS__WRITE_TOKEN"),
            "[{}] the proxy presents the origins' token",
            s.name
        );

        // The agent: tracker and origins as rendered, the registry where containerd looks.
        let Some(ds) = s.workload("agent") else {
            continue;
        };
        let agent = s.config("agent");
        assert_eq!(str_list(agent.get("origins")), members, "[{}]", s.name);
        let tracker_url = agent["tracker"].as_str().unwrap();
        let tracker_w = s.workload("tracker").unwrap();
        let tracker_svc = s.service_selecting(tracker_w)[0];
        let expected = format!(
            "{scheme}://{}.{ns}.svc.cluster.local:{}",
            tracker_svc["metadata"]["name"].as_str().unwrap(),
            tracker_svc["spec"]["ports"][0]["port"]
        );
        assert_eq!(tracker_url, expected, "[{}] agent's tracker", s.name);
        let pod = pod_spec(ds);
        assert_eq!(pod["hostNetwork"], true);
        assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
        let agent_c = containers(ds).next().unwrap();
        let listen = agent["listen"].as_str().unwrap();
        assert_eq!(listen, "127.0.0.1:8081", "[{}] agent registry", s.name);
        assert_eq!(container_port(agent_c, "registry"), Some(port_of(listen)));
        assert_eq!(
            container_port(agent_c, "peer"),
            Some(port_of(agent["peer"]["listen"].as_str().unwrap()))
        );
        let advertises = pod_env(s, agent_c, "agent")
            .iter()
            .any(|(k, _)| k == "SHOAL_AGENT_PEER__ADVERTISE_IP");
        assert_eq!(
            tracker
                .get("trust_announced_addr")
                .and_then(|v| v.as_bool()),
            advertises.then_some(true),
            "[{}] the tracker trusts announced addresses exactly when agents announce one",
            s.name
        );
        if let Some(init) = init_containers(ds).next() {
            let args: Vec<&str> = init["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            if args[1] == "install" {
                let mirror = args.iter().position(|a| *a == "--mirror").unwrap() + 1;
                assert_eq!(args[mirror], format!("http://{listen}"));
            }
        }
    }
}

#[test]
fn every_selector_matches_what_it_is_meant_to() {
    for s in &rendered().sets {
        let workloads: Vec<&Value> = s.workloads().collect();
        for w in &workloads {
            let sel = &w["spec"]["selector"]["matchLabels"];
            assert!(selects(sel, &w["spec"]["template"]["metadata"]["labels"]));
        }
        for svc in s.kind("Service") {
            let name = &svc["metadata"]["name"];
            let w = workloads
                .iter()
                .find(|w| {
                    selects(
                        &svc["spec"]["selector"],
                        &w["spec"]["template"]["metadata"]["labels"],
                    )
                })
                .unwrap_or_else(|| panic!("[{}] Service {name} selects no pods", s.name));
            for p in svc["spec"]["ports"].as_array().unwrap() {
                let target = p["targetPort"].as_str().unwrap();
                assert!(
                    containers(w).any(|c| container_port(c, target).is_some()),
                    "[{}] Service {name} targets port {target}, which no container has",
                    s.name
                );
            }
        }
        for pdb in s.kind("PodDisruptionBudget") {
            assert!(
                workloads.iter().any(|w| selects(
                    &pdb["spec"]["selector"]["matchLabels"],
                    &w["spec"]["template"]["metadata"]["labels"]
                )),
                "[{}] PodDisruptionBudget {} covers no pods",
                s.name,
                pdb["metadata"]["name"]
            );
        }
        for sm in s.kind("ServiceMonitor") {
            let svc = s
                .kind("Service")
                .find(|svc| {
                    selects(
                        &sm["spec"]["selector"]["matchLabels"],
                        &svc["metadata"]["labels"],
                    )
                })
                .unwrap_or_else(|| panic!("[{}] ServiceMonitor selects no Service", s.name));
            let port = sm["spec"]["endpoints"][0]["port"].as_str().unwrap();
            assert!(
                svc["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == port)
            );
        }
        for ing in s.kind("Ingress") {
            for rule in ing["spec"]["rules"].as_array().unwrap() {
                for path in rule["http"]["paths"].as_array().unwrap() {
                    let backend = &path["backend"]["service"];
                    let svc = s
                        .kind("Service")
                        .find(|svc| svc["metadata"]["name"] == backend["name"])
                        .unwrap_or_else(|| {
                            panic!("[{}] Ingress backend {} missing", s.name, backend["name"])
                        });
                    assert_eq!(
                        svc["metadata"]["labels"]["app.kubernetes.io/component"],
                        "proxy"
                    );
                }
            }
        }
        // Every ConfigMap and Secret a pod mounts is rendered, or named in values.
        for w in &workloads {
            for v in pod_spec(w)["volumes"].as_array().into_iter().flatten() {
                if let Some(cm) = v["configMap"]["name"].as_str() {
                    assert!(s.kind("ConfigMap").any(|o| o["metadata"]["name"] == cm));
                }
                if let Some(secret) = v["secret"]["secretName"].as_str() {
                    let rendered = s.kind("Secret").any(|o| o["metadata"]["name"] == secret);
                    assert!(
                        rendered || secret == "registry-htpasswd",
                        "[{}] Secret {secret} is neither rendered nor given in values",
                        s.name
                    );
                }
            }
        }
    }
}

#[test]
fn every_pod_runs_restricted() {
    for s in &rendered().sets {
        for w in s.workloads() {
            let name = w["metadata"]["name"].as_str().unwrap();
            let at = format!("[{}] {name}", s.name);
            let pod = pod_spec(w);
            assert_eq!(
                pod["enableServiceLinks"], false,
                "{at}: service links would put SHOAL_*_PORT variables in the parts' config"
            );
            assert_eq!(pod["automountServiceAccountToken"], false, "{at}");
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{at}");
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
                "{at}"
            );
            assert!(
                pod["securityContext"]["runAsUser"].as_u64().unwrap() > 0,
                "{at}"
            );
            assert_eq!(
                pod["hostNetwork"] == true,
                w["kind"] == "DaemonSet",
                "{at}: host network"
            );
            for c in containers(w).chain(init_containers(w)) {
                let at = format!("{at}/{}", c["name"]);
                let sc = &c["securityContext"];
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{at}");
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{at}");
                assert_ne!(sc["privileged"], true, "{at}");
                assert!(
                    sc["capabilities"]["drop"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|c| c == "ALL"),
                    "{at}"
                );
                assert!(sc["capabilities"]["add"].is_null(), "{at}");
                assert!(c["resources"]["requests"]["memory"].is_string(), "{at}");
                assert!(c["resources"]["limits"]["memory"].is_string(), "{at}");
                assert!(part_of(c).is_some(), "{at}: runs {}", c["command"]);
            }
            for c in containers(w) {
                let at = format!("{at}/{}", c["name"]);
                assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health", "{at}");
                assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready", "{at}");
                assert!(
                    sc_runs_as_pod_user(c),
                    "{at}: only the init container may change the user"
                );
            }
            // The one container that runs as root: it writes containerd's certs.d and sees
            // nothing else of the host.
            for c in init_containers(w) {
                assert_eq!(c["name"], "containerd-config", "{at}");
                let mounts = c["volumeMounts"].as_array().unwrap();
                assert_eq!(
                    mounts.len(),
                    1,
                    "{at}: the init container mounts certs.d only"
                );
                let vol = pod["volumes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["name"] == mounts[0]["name"])
                    .unwrap();
                assert_eq!(vol["hostPath"]["path"], mounts[0]["mountPath"], "{at}");
            }
            for v in pod["volumes"].as_array().into_iter().flatten() {
                if v["hostPath"].is_object() {
                    let init_uses = init_containers(w).any(|c| {
                        c["volumeMounts"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|m| m["name"] == v["name"])
                    });
                    let main_uses = containers(w).any(|c| {
                        c["volumeMounts"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|m| m["name"] == v["name"])
                    });
                    assert!(
                        init_uses && !main_uses,
                        "{at}: host path {} outside the init container",
                        v["hostPath"]["path"]
                    );
                }
            }
        }
    }
}

pub fn sc_runs_as_pod_user(c: &Value) -> bool {
    c["securityContext"]["runAsUser"].is_null() && c["securityContext"]["runAsNonRoot"] != false
}
