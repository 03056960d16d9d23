//! Who each lab container is, as pvediag's identity check sees it (see `crate::identity`).
//!
//! A real container has its own UTS and mount namespaces: `gethostname()` says `cmux-202`,
//! `/etc/machine-id` and `/proc/net/fib_trie` are its own. The lab's containers run real bash on
//! this machine, so the lab gives each one that view the way a namespace would:
//!
//! - `HOSTNAME=` the spec's hostname (`cmux-{vmid}`, `pvelxc-…`) in execd's environment (bash takes `$HOSTNAME` from there);
//! - `<ct dir>/etc/machine-id` and `<ct dir>/proc/net/fib_trie`, and execd maps the two absolute
//!   paths onto them in the command it runs (as a mount namespace maps them), so the production
//!   command, which reads the real paths, reads the container's files;
//! - an address per container, `10.10.X.Y` from its VMID ([`ipv4_of`]): only a view, nothing
//!   listens on it.
//!
//! The host gets `getent` and `pct` stand-ins in `<host dir>/bin`: `getent ahostsv4 cmux-N.lan`
//! answers the LAN's view (where a stale lease can send a name to another container), `pct config
//! VMID` and `pct exec VMID -- ip -4 -o addr show scope global` the container's own.

use std::net::Ipv4Addr;
use std::path::Path;

use super::container::ContainerRuntime;

/// The lab address of a container: `10.10.(vmid / 256 % 256).(vmid % 256)`.
pub fn ipv4_of(vmid: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 10, ((vmid >> 8) & 0xff) as u8, (vmid & 0xff) as u8)
}

/// A container's hostname (what `gethostname()` says inside): its spec's.
pub fn hostname_of(spec: &super::ContainerSpec) -> String {
    spec.hostname.clone()
}

/// A container's `/etc/machine-id`: 32 hex digits from its VMID.
pub fn machine_id_of(vmid: u32) -> String {
    format!(
        "{:016x}{:016x}",
        0x5eed_0000_u64 + vmid as u64,
        0x1ab_u64 * (vmid as u64 + 1)
    )
}

/// `net0` of the container's config, as `pct config` prints it (DHCP, like cmux's containers).
pub fn net0_of(vmid: u32) -> String {
    format!(
        "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:{:02X}:{:02X}:{:02X},ip=dhcp,type=veth",
        (vmid >> 16) & 0xff,
        (vmid >> 8) & 0xff,
        vmid & 0xff
    )
}

/// The paths the identity section reads, mapped into the container's directory.
const MAPPED: &[&str] = &["/etc/machine-id", "/proc/net/fib_trie"];

/// Writes the container's own `/etc/machine-id` and `/proc/net/fib_trie` under `dir`.
pub fn write_container_view(dir: &Path, vmid: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("etc"))?;
    std::fs::create_dir_all(dir.join("proc/net"))?;
    std::fs::write(
        dir.join("etc/machine-id"),
        format!("{}\n", machine_id_of(vmid)),
    )?;
    let ip = ipv4_of(vmid);
    let o = ip.octets();
    let fib = format!(
        "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 10.10.{a}.0/24 2 0 2\n        +-- 10.10.{a}.0/28 2 0 2\n           |-- 10.10.{a}.0\n              /24 link UNICAST\n           |-- {ip}\n              /32 host LOCAL\n        |-- 10.10.{a}.255\n           /32 link BROADCAST\n     +-- 127.0.0.0/8 2 0 2\n        +-- 127.0.0.0/31 1 0 0\n           |-- 127.0.0.0\n              /8 host LOCAL\n           |-- 127.0.0.1\n              /32 host LOCAL\n        |-- 127.255.255.255\n           /32 link BROADCAST\nLocal:\n  +-- 0.0.0.0/0 3 0 5\n     +-- 10.10.{a}.0/24 2 0 2\n           |-- {ip}\n              /32 host LOCAL\n     +-- 127.0.0.0/8 2 0 2\n           |-- 127.0.0.1\n              /32 host LOCAL\n",
        a = o[2],
    );
    std::fs::write(dir.join("proc/net/fib_trie"), fib)
}

/// The command as the container's namespaces would see it: the identity paths mapped into `dir`.
pub fn command_in_container(command: &str, dir: &Path) -> String {
    let mut c = command.to_string();
    for p in MAPPED {
        c = c.replace(p, &format!("{}{p}", dir.display()));
    }
    c
}

/// Where `cmux-{vmid}.lan` leads on the LAN: the container its name resolves to (normally itself;
/// another one after a stale lease), if that one runs.
pub fn lan_resolve(
    containers: &std::collections::BTreeMap<u32, std::sync::Arc<ContainerRuntime>>,
    vmid: u32,
) -> Option<&std::sync::Arc<ContainerRuntime>> {
    let named = containers.get(&vmid)?;
    let to = named.lan_name_to.unwrap_or(vmid);
    containers.get(&to).filter(|c| c.running)
}

/// `<host dir>/bin/getent` and `<host dir>/bin/pct`: the host's view of names and containers.
pub fn write_host_view<'a>(
    host_dir: &Path,
    containers: impl Iterator<Item = &'a ContainerRuntime> + Clone,
    unpublished: &[u32],
) -> std::io::Result<()> {
    let bin = host_dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let all: std::collections::BTreeMap<u32, &ContainerRuntime> =
        containers.clone().map(|c| (c.vmid, c)).collect();
    // The LAN's DNS: running containers' names, each to the address its (maybe stale) record holds.
    let mut hosts = String::new();
    for c in all.values() {
        let to = c.lan_name_to.unwrap_or(c.vmid);
        if all.get(&to).is_some_and(|t| t.running) {
            hosts.push_str(&format!("{} cmux-{}.lan\n", ipv4_of(to), c.vmid));
            if c.hostname != format!("cmux-{}", c.vmid) && !unpublished.contains(&c.vmid) {
                hosts.push_str(&format!("{} {}.lan\n", ipv4_of(to), c.hostname));
            }
        }
    }
    std::fs::write(host_dir.join("lan-hosts"), hosts)?;
    let getent = format!(
        "#!/bin/bash\n# pvediag lab: the LAN's DNS as the PVE host sees it (getent ahostsv4|hosts NAME)\ncase $1 in ahostsv4|hosts) ;; *) exit 1 ;; esac\nwhile read -r ip name; do\n  if [ \"$name\" = \"$2\" ]; then\n    if [ \"$1\" = hosts ]; then printf '%s       %s\\n' \"$ip\" \"$name\"; else printf '%s    STREAM %s\\n%s    DGRAM\\n%s    RAW\\n' \"$ip\" \"$name\" \"$ip\" \"$ip\"; fi\n    exit 0\n  fi\ndone < '{}'\nexit 2\n",
        host_dir.join("lan-hosts").display()
    );
    write_exec(&bin.join("getent"), &getent)?;
    // pct: config and the container's own address; anything else is not simulated.
    let mut cases = String::new();
    for c in all.values().filter(|c| c.running) {
        cases.push_str(&format!(
            "  {vmid}) conf=$'arch: amd64\\ncores: 4\\nhostname: {h}\\nmemory: 8192\\nnet0: {net}\\nostype: debian\\nrootfs: local-lvm:vm-{vmid}-disk-0,size=32G\\nunprivileged: 1'; ip=$'2: eth0    inet {ip}/24 brd 10.10.{b}.255 scope global dynamic eth0\\\\       valid_lft 3600sec preferred_lft 3600sec' ;;\n",
            vmid = c.vmid,
            h = c.hostname,
            net = net0_of(c.vmid),
            ip = ipv4_of(c.vmid),
            b = ipv4_of(c.vmid).octets()[2],
        ));
    }
    let pct = format!(
        "#!/bin/bash\n# pvediag lab: pct on the PVE host (config, and the container's own address)\ncase $2 in\n{cases}  *) echo \"Configuration file 'nodes/pve/lxc/$2.conf' does not exist\" >&2; exit 2 ;;\nesac\nif [ \"$1\" = config ] && [ $# = 2 ]; then printf '%s\\n' \"$conf\"; exit 0; fi\nif [ \"$1\" = exec ] && [ \"$3\" = -- ] && [ \"${{*:4}}\" = 'ip -4 -o addr show scope global' ]; then printf '%s\\n' \"$ip\"; exit 0; fi\necho \"pct (pvediag lab stand-in): only 'pct config VMID' and 'pct exec VMID -- ip -4 -o addr show scope global' are simulated\" >&2\nexit 2\n"
    );
    write_exec(&bin.join("pct"), &pct)
}

fn write_exec(path: &Path, body: &str) -> std::io::Result<()> {
    std::fs::write(path, body)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}
