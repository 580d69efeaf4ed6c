//! Where each workload kind keeps its pod template, and the edit of one pod
//! template: previous injection removed, checks, sidecar and volume added.

use serde::Serialize;
use serde_norway::{Mapping, Value};
use std::collections::BTreeMap;

use crate::annotations::{self, SidecarConfig};
use crate::{
    ADMIN_PORT, ErrorKind, Injector, SIDECAR_CONTAINER, SIDECAR_UID, SOCKET_MOUNT, SOCKET_VOLUME,
};

/// The pod template of a workload object (the mapping holding the pod's
/// `metadata` and `spec`; for a Pod, the object itself). `None` for kinds
/// that have none (Services, ConfigMaps, custom resources, ...).
pub(crate) fn template_of(obj: &mut Mapping) -> Option<Result<&mut Mapping, ErrorKind>> {
    let api = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let path: &[&str] = match (api, kind) {
        ("v1", "Pod") => &[],
        ("apps/v1", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("batch/v1", "Job") => &["spec", "template"],
        ("batch/v1", "CronJob") => &["spec", "jobTemplate", "spec", "template"],
        _ => return None,
    };
    let mut at = obj;
    let mut walked = String::new();
    for key in path {
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(key);
        match at.get_mut(*key).and_then(Value::as_mapping_mut) {
            Some(next) => at = next,
            None => return Some(Err(ErrorKind::Malformed(walked, "expected a mapping"))),
        }
    }
    Some(Ok(at))
}

/// Injects into one pod template; `false` when its annotations opt out.
/// `completes` is set for Jobs and CronJobs, whose pods run to completion.
pub(crate) fn inject(
    inj: &Injector,
    template: &mut Mapping,
    completes: bool,
    name: &str,
) -> Result<bool, ErrorKind> {
    let annotations = read_annotations(template)?;
    let Some(cfg) = SidecarConfig::from_annotations(&annotations, &inj.opts.ca_url)? else {
        return Ok(false);
    };
    let spec = template
        .get_mut("spec")
        .and_then(Value::as_mapping_mut)
        .ok_or(ErrorKind::Malformed("spec".into(), "expected a mapping"))?;
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Err(ErrorKind::HostNetwork);
    }
    let restart = spec.get("restartPolicy").and_then(Value::as_str);
    if !inj.opts.native_sidecar {
        if completes {
            return Err(ErrorKind::Completes(
                name.split('/').next().unwrap_or(name).to_owned() + " pods run to completion",
            ));
        }
        if let Some(p @ ("Never" | "OnFailure")) = restart {
            return Err(ErrorKind::Completes(format!("restartPolicy: {p}")));
        }
    }
    // Idempotence: a previous injection is taken out first, so this one
    // replaces it whatever options or annotations it had.
    remove_previous(spec)?;
    check_ports(spec, &cfg)?;
    let sidecar = serde_norway::to_value(sidecar_container(inj, &cfg))
        .map_err(|_| ErrorKind::Malformed("sidecar".into(), "could not be rendered"))?;
    if inj.opts.native_sidecar {
        // First of the init containers: those after it, and the app, start
        // only once its startup probe passes.
        seq_mut(spec, "initContainers")?.insert(0, sidecar);
    } else {
        seq_mut(spec, "containers")?.push(sidecar);
    }
    let volume = serde_norway::to_value(socket_volume(inj))
        .map_err(|_| ErrorKind::Malformed("volume".into(), "could not be rendered"))?;
    seq_mut(spec, "volumes")?.push(volume);
    Ok(true)
}

/// The template's annotations, which must be strings (Kubernetes' rule).
fn read_annotations(template: &Mapping) -> Result<BTreeMap<String, String>, ErrorKind> {
    let Some(a) = template.get("metadata").and_then(|m| m.get("annotations")) else {
        return Ok(BTreeMap::new());
    };
    if a.is_null() {
        return Ok(BTreeMap::new());
    }
    let a = a.as_mapping().ok_or(ErrorKind::Malformed(
        "metadata.annotations".into(),
        "expected a mapping",
    ))?;
    let mut out = BTreeMap::new();
    for (k, v) in a {
        let Some(k) = k.as_str() else { continue };
        if !k.starts_with("tessera.dev/") {
            continue;
        }
        let known = [
            annotations::INJECT,
            annotations::INBOUND,
            annotations::ALLOW,
            annotations::OUTBOUND,
            annotations::SPIFFE_ID,
        ];
        let Some(&name) = known.iter().find(|n| **n == k) else {
            // A misspelt annotation would silently configure nothing.
            return Err(ErrorKind::Annotation(
                "tessera.dev/*",
                format!("{k:?} is not one of {}", known.join(", ")),
            ));
        };
        let v = v
            .as_str()
            .ok_or_else(|| ErrorKind::Annotation(name, "must be a string (quote it)".into()))?;
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

/// Removes an earlier injection's sidecar container and socket volume, and
/// the lists it created if they end up empty (an empty list means the same
/// as none to Kubernetes).
fn remove_previous(spec: &mut Mapping) -> Result<(), ErrorKind> {
    for (list, name) in [
        ("containers", SIDECAR_CONTAINER),
        ("initContainers", SIDECAR_CONTAINER),
        ("volumes", SOCKET_VOLUME),
    ] {
        let Some(v) = spec.get_mut(list) else {
            continue;
        };
        let Some(seq) = v.as_sequence_mut() else {
            return Err(ErrorKind::Malformed(
                format!("spec.{list}"),
                "expected a sequence",
            ));
        };
        seq.retain(|item| item.get("name").and_then(Value::as_str) != Some(name));
        if seq.is_empty() && list != "containers" {
            spec.remove(list);
        }
    }
    Ok(())
}

/// Refuses ports that another container declares and the sidecar uses.
fn check_ports(spec: &Mapping, cfg: &SidecarConfig) -> Result<(), ErrorKind> {
    let ours = cfg.ports();
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get(list) else {
            continue;
        };
        let containers = containers
            .as_sequence()
            .ok_or_else(|| ErrorKind::Malformed(format!("spec.{list}"), "expected a sequence"))?;
        for c in containers {
            let cname = c.get("name").and_then(Value::as_str).unwrap_or("<unnamed>");
            let ports = c.get("ports").and_then(Value::as_sequence);
            for p in ports.into_iter().flatten() {
                let Some(port) = p.get("containerPort").and_then(Value::as_u64) else {
                    continue;
                };
                if let Some(&(port, what)) = ours.iter().find(|(q, _)| u64::from(*q) == port) {
                    return Err(ErrorKind::PortCollision {
                        port,
                        container: cname.to_owned(),
                        what: what.to_owned(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// The sequence at `key` of the pod spec, created (empty, last) when absent.
fn seq_mut<'a>(spec: &'a mut Mapping, key: &str) -> Result<&'a mut Vec<Value>, ErrorKind> {
    if !spec.contains_key(key) {
        spec.insert(key.into(), Value::Sequence(vec![]));
    }
    spec.get_mut(key)
        .and_then(Value::as_sequence_mut)
        .ok_or_else(|| ErrorKind::Malformed(format!("spec.{key}"), "expected a sequence"))
}

/// A container, with the fields the sidecar uses, in Kubernetes' usual order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Container {
    name: &'static str,
    image: String,
    args: Vec<String>,
    env: Vec<EnvVar>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ports: Vec<ContainerPort>,
    volume_mounts: Vec<VolumeMount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restart_policy: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    startup_probe: Option<Probe>,
    readiness_probe: Probe,
    liveness_probe: Probe,
    security_context: SecurityContext,
}

#[derive(Serialize)]
struct EnvVar {
    name: &'static str,
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContainerPort {
    name: String,
    container_port: u16,
    protocol: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VolumeMount {
    name: &'static str,
    mount_path: &'static str,
    read_only: bool,
}

/// An exec probe: the admin endpoint listens on loopback only, where a
/// kubelet's `httpGet` (sent to the pod's IP) cannot reach it, and the image
/// has no shell or HTTP client, so the sidecar binary is the probe.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    exec: Exec,
    period_seconds: u32,
    failure_threshold: u32,
    timeout_seconds: u32,
}

#[derive(Serialize)]
struct Exec {
    command: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SecurityContext {
    run_as_non_root: bool,
    run_as_user: u32,
    run_as_group: u32,
    allow_privilege_escalation: bool,
    read_only_root_filesystem: bool,
    capabilities: Capabilities,
}

#[derive(Serialize)]
struct Capabilities {
    drop: Vec<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Volume {
    name: &'static str,
    host_path: HostPath,
}

#[derive(Serialize)]
struct HostPath {
    path: String,
    #[serde(rename = "type")]
    kind: &'static str,
}

fn probe(path: &str, period_seconds: u32, failure_threshold: u32) -> Probe {
    Probe {
        exec: Exec {
            command: vec![
                "/tessera-sidecar".into(),
                "--probe".into(),
                format!("http://127.0.0.1:{ADMIN_PORT}{path}"),
            ],
        },
        period_seconds,
        failure_threshold,
        timeout_seconds: 5,
    }
}

fn sidecar_container(inj: &Injector, cfg: &SidecarConfig) -> Container {
    let native = inj.opts.native_sidecar;
    Container {
        name: SIDECAR_CONTAINER,
        image: inj.opts.image.clone(),
        args: cfg
            .sets(&inj.opts.ca_url)
            .into_iter()
            .flat_map(|s| ["--set".to_owned(), s])
            .collect(),
        env: vec![EnvVar {
            name: "SPIFFE_ENDPOINT_SOCKET",
            value: format!("unix://{SOCKET_MOUNT}/{}", inj.socket_file),
        }],
        ports: cfg
            .inbound
            .iter()
            .map(|&(l, _)| ContainerPort {
                // IANA_SVC_NAME: at most 15 characters; "tessera-65535" is 13.
                name: format!("tessera-{l}"),
                container_port: l,
                protocol: "TCP",
            })
            .collect(),
        volume_mounts: vec![VolumeMount {
            name: SOCKET_VOLUME,
            mount_path: SOCKET_MOUNT,
            read_only: true,
        }],
        restart_policy: native.then_some("Always"),
        // Up to two minutes for the first identity, checked every second,
        // so the app starts as soon as the sidecar is ready.
        startup_probe: native.then(|| probe("/readyz", 1, 120)),
        readiness_probe: probe("/readyz", 5, 3),
        liveness_probe: probe("/healthz", 10, 3),
        security_context: SecurityContext {
            run_as_non_root: true,
            run_as_user: SIDECAR_UID,
            run_as_group: SIDECAR_UID,
            allow_privilege_escalation: false,
            read_only_root_filesystem: true,
            capabilities: Capabilities { drop: vec!["ALL"] },
        },
    }
}

fn socket_volume(inj: &Injector) -> Volume {
    Volume {
        name: SOCKET_VOLUME,
        host_path: HostPath {
            path: inj.socket_dir.clone(),
            kind: "Directory",
        },
    }
}
