//! `[[files]]` beyond content: owner and group by the image's own names (its /etc/passwd and
//! /etc/group, not the host's), a path that must be absent, a directory. Offline on a copy of the
//! example root, run as root so ownership can change; every verdict checked with stat.

use crate::common;
use common::*;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn put(root: &Path, abs: &str, text: &str) {
    let p = root.join(abs.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

const POLICY: &str = r#"
[[files]]
path = "/etc/chrony/keys.local"
content = "1 SHA256 HEX:00\n"
mode = "0640"
owner = "root"
group = "_chrony"

[[files]]
path = "/var/lib/site/cache"
kind = "directory"
mode = "0750"
owner = "_chrony"
group = "adm"

[[files]]
path = "/etc/old-thing.conf"
state = "absent"
"#;

#[test]
fn owner_group_absent_and_directories() {
    let root = example_root();
    let r = root.path();
    let rs = r.to_str().unwrap();
    // The image's accounts differ from the host's: ids come from these files.
    put(
        r,
        "/etc/passwd",
        "root:x:0:0::/root:/bin/bash\n_chrony:x:104:110::/var/lib/chrony:/usr/sbin/nologin\n",
    );
    put(r, "/etc/group", "root:x:0:\nadm:x:4:\n_chrony:x:110:\n");
    put(r, "/etc/old-thing.conf", "left over\n");
    let tmp = tempfile::tempdir().unwrap();
    let pol = tmp.path().join("p.toml");
    std::fs::write(&pol, POLICY).unwrap();
    let p = pol.to_str().unwrap();

    let o = guestprep(&["verify", "--root", rs, "--policy", p, "--json"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let rep = json(&o);
    assert_eq!(
        item(&rep, "file:/etc/chrony/keys.local")["message"],
        "missing"
    );
    assert_eq!(item(&rep, "file:/var/lib/site/cache")["message"], "missing");
    assert_eq!(
        item(&rep, "file:/etc/old-thing.conf")["message"],
        "left from an earlier policy; to be removed"
    );

    let o = guestprep(&["apply", "--root", rs, "--policy", p, "--json"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let m = std::fs::metadata(r.join("etc/chrony/keys.local")).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.permissions().mode() & 0o7777),
        (0, 110, 0o640)
    );
    let d = std::fs::metadata(r.join("var/lib/site/cache")).unwrap();
    assert!(d.is_dir());
    assert_eq!(
        (d.uid(), d.gid(), d.permissions().mode() & 0o7777),
        (104, 4, 0o750)
    );
    assert!(!r.join("etc/old-thing.conf").exists());
    let o = guestprep(&["apply", "--root", rs, "--policy", p, "--json"]);
    assert_eq!(
        json(&o)["apply"]["changes"].as_array().unwrap().len(),
        0,
        "{}",
        stdout(&o)
    );

    // Ownership changed by hand: drift that names both; apply changes the owner only (same inode,
    // same content).
    std::os::unix::fs::chown(r.join("etc/chrony/keys.local"), Some(0), Some(0)).unwrap();
    std::fs::set_permissions(
        r.join("var/lib/site/cache"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let ino = std::fs::metadata(r.join("etc/chrony/keys.local"))
        .unwrap()
        .ino();
    let rep = json(&guestprep(&[
        "verify", "--root", rs, "--policy", p, "--json",
    ]));
    assert_eq!(
        item(&rep, "file:/etc/chrony/keys.local")["message"],
        "owner 0:0, want root:_chrony"
    );
    assert_eq!(
        item(&rep, "file:/var/lib/site/cache")["message"],
        "mode 0777, want 0750"
    );
    assert_eq!(
        item(&rep, "file:/etc/chrony/keys.local")["remediation"],
        "chown root:_chrony /etc/chrony/keys.local"
    );
    let o = guestprep(&["apply", "--root", rs, "--policy", p, "--json"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let m = std::fs::metadata(r.join("etc/chrony/keys.local")).unwrap();
    assert_eq!((m.ino(), m.gid()), (ino, 110), "chown only, no rewrite");
    let d = std::fs::metadata(r.join("var/lib/site/cache")).unwrap();
    assert_eq!(d.permissions().mode() & 0o7777, 0o750);

    // A name the image does not have: an error naming the image's file, nothing changed.
    std::fs::write(
        &pol,
        "[[files]]\npath = \"/etc/x.conf\"\ncontent = \"x\\n\"\nowner = \"ghost\"\n",
    )
    .unwrap();
    let o = guestprep(&["apply", "--root", rs, "--policy", p, "--json"]);
    assert_eq!(code(&o), 4, "{}", stdout(&o));
    let it = item(&json(&o), "file:/etc/x.conf").clone();
    assert_eq!(it["status"], "error");
    assert!(
        it["message"]
            .as_str()
            .unwrap()
            .contains("user `ghost` is not in /etc/passwd"),
        "{it}"
    );
    assert!(!r.join("etc/x.conf").exists());

    // Mistakes in the policy are named with file:line, exit 2.
    for (text, want) in [
        (
            "[[files]]\npath = \"/d\"\nkind = \"directory\"\ncontent = \"x\"\n",
            "`files[0].content`: a directory has no content",
        ),
        (
            "[[files]]\npath = \"/d\"\nstate = \"absent\"\nowner = \"root\"\n",
            "`files[0].owner`: `owner` does not apply to an absent path",
        ),
        (
            "[[files]]\npath = \"/d\"\ncontent = \"x\"\nowner = \"Bad Name\"\n",
            "`files[0].owner`: `Bad Name` is not a user or group name",
        ),
        (
            "[[files]]\npath = \"/d\"\nkind = \"fifo\"\n",
            "`files[0].kind`: `fifo` is not a kind",
        ),
    ] {
        std::fs::write(&pol, text).unwrap();
        let o = guestprep(&["policy", "check", "--policy", p]);
        assert_eq!(code(&o), 2, "{text}");
        assert!(stderr(&o).contains(want), "{text}: {}", stderr(&o));
    }
}
