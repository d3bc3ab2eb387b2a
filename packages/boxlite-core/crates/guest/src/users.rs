//! User and group names from the box's own `/etc/passwd` and `/etc/group`, read as plain files:
//! the agent is static glibc and must not go through NSS.

use crate::ROOTFS;

/// Who an execution runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (those of /etc/group that list the user).
    pub groups: Vec<u32>,
    /// The home directory from /etc/passwd, if the user has an entry.
    pub home: Option<String>,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).unwrap_or(&"/").to_string(),
            })
        })
        .collect()
}

/// (name, gid, members) of each group.
fn groups(text: &str) -> Vec<(String, u32, Vec<String>)> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let members = f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            Some((f.first()?.to_string(), f.get(2)?.parse().ok()?, members))
        })
        .collect()
}

/// Resolves `user[:group]` (names or numbers) against the given passwd and group files.
pub fn resolve_in(spec: &str, passwd_text: &str, group_text: &str) -> Result<Identity, String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let users = passwd(passwd_text);
    let all_groups = groups(group_text);
    let entry = match user.parse::<u32>() {
        Ok(uid) => users.iter().find(|e| e.uid == uid),
        Err(_) => Some(users.iter().find(|e| e.name == user).ok_or_else(|| {
            format!("unknown user {user:?}: the image's /etc/passwd has no such entry (use a uid)")
        })?),
    };
    let uid = match user.parse::<u32>() {
        Ok(uid) => uid,
        Err(_) => entry.map(|e| e.uid).expect("resolved above"),
    };
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => all_groups
                .iter()
                .find(|(name, _, _)| name == g)
                .map(|(_, gid, _)| *gid)
                .ok_or_else(|| {
                    format!("unknown group {g:?}: the image's /etc/group has no such entry")
                })?,
        },
        None => entry.map_or(uid, |e| e.gid),
    };
    let supplementary = entry
        .map(|e| {
            all_groups
                .iter()
                .filter(|(_, g, members)| *g != gid && members.contains(&e.name))
                .map(|(_, g, _)| *g)
                .collect()
        })
        .unwrap_or_default();
    Ok(Identity {
        uid,
        gid,
        groups: supplementary,
        home: entry.map(|e| e.home.clone()),
    })
}

/// Resolves `user[:group]` in the box's root file system.
pub fn resolve(spec: &str) -> Result<Identity, String> {
    let read = |path: &str| std::fs::read_to_string(format!("{ROOTFS}{path}")).unwrap_or_default();
    resolve_in(spec, &read("/etc/passwd"), &read("/etc/group"))
}

#[cfg(test)]
mod tests {
    use super::resolve_in;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\nalice:x:1000:\nstaff:x:50:alice,bob\nnogroup:x:65534:\n";

    #[test]
    fn names_and_numbers_resolve_through_the_images_files() {
        let alice = resolve_in("alice", PASSWD, GROUP).unwrap();
        assert_eq!(
            (alice.uid, alice.gid, alice.groups.clone()),
            (1000, 1000, vec![50])
        );
        assert_eq!(alice.home.as_deref(), Some("/home/alice"));
        let nobody = resolve_in("nobody:staff", PASSWD, GROUP).unwrap();
        assert_eq!((nobody.uid, nobody.gid), (65534, 50));
        let numeric = resolve_in("4242", PASSWD, GROUP).unwrap();
        assert_eq!((numeric.uid, numeric.gid, numeric.home), (4242, 4242, None));
        let pair = resolve_in("1000:7", PASSWD, GROUP).unwrap();
        assert_eq!((pair.uid, pair.gid), (1000, 7));
        assert!(resolve_in("mallory", PASSWD, GROUP)
            .unwrap_err()
            .contains("mallory"));
        assert!(resolve_in("alice:wheel", PASSWD, GROUP)
            .unwrap_err()
            .contains("wheel"));
    }
}
