//! Every kind of mistake in a configuration gets its own located, explained error.
//!
//! The table below holds one bad configuration per case. Most cases are appended to a valid
//! cluster prefix (`common::PREFIX`, 10 lines) and followed by a valid pool `p`
//! (`common::SUFFIX`), so their
//! expected line numbers count from the first line of the case's own text.

mod common;

use std::path::Path;

use common::{PREFIX, PREFIX_LINES, SUFFIX};
use switchyard_config::{Diagnostic, Diagnostics};

struct Case {
    /// What the case shows.
    name: &'static str,
    /// Wrap in `PREFIX` and `SUFFIX`.
    wrapped: bool,
    toml: &'static str,
    code: &'static str,
    /// Fragment of the message.
    message: &'static str,
    /// Line within `toml` (1-based).
    line: usize,
    field: &'static str,
}

const fn case(
    name: &'static str,
    toml: &'static str,
    code: &'static str,
    message: &'static str,
    line: usize,
    field: &'static str,
) -> Case {
    Case {
        name,
        wrapped: true,
        toml,
        code,
        message,
        line,
        field,
    }
}

const fn whole(
    name: &'static str,
    toml: &'static str,
    code: &'static str,
    message: &'static str,
    line: usize,
    field: &'static str,
) -> Case {
    Case {
        name,
        wrapped: false,
        toml,
        code,
        message,
        line,
        field,
    }
}

/// A request-mode service `s` on listener `l` (13 lines), followed by the header of its
/// first routing rule (line 14); a case's own lines start at 15.
macro_rules! request_service {
    () => {
        r#"[[listeners]]
name = "l"
address = "192.0.2.5:80"
protocol = "http"

[[services]]
name = "s"
vip = "192.0.2.5:80"
protocol = "tcp"
mode = "request"
listener = "l"
pool = "p"

[[services.routes]]
"#
    };
}

const CASES: &[Case] = &[
    whole(
        "unknown field at top level",
        r#"colour = "blue"

[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "192.0.2.1"
roles = ["forwarder", "classifier"]
"#,
        "unknown-field",
        "unknown field `colour` in the configuration",
        1,
        "colour",
    ),
    case(
        "unknown field nested in a host",
        r#"[[pools]]
name = "q"

[[pools.hosts]]
id = 501
name = "h1"
adress = "192.0.2.5:80"
address = "192.0.2.5:80"
app = "a"
"#,
        "unknown-field",
        "unknown field `adress` in host",
        7,
        "pools[0].hosts[0].adress",
    ),
    case(
        "bad IPv4 address",
        r#"[[services]]
name = "s"
vip = "198.51.100.300:80"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "p"
"#,
        "bad-address",
        "\"198.51.100.300:80\" is not an IP:port address",
        3,
        "services[0].vip",
    ),
    case(
        "IPv6 address without brackets",
        r#"[[services]]
name = "s"
vip = "2001:db8::1:80"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "p"
"#,
        "bad-address",
        "is not an IP:port address",
        3,
        "services[0].vip",
    ),
    case(
        "port 0",
        r#"[[services]]
name = "s"
vip = "[2001:db8::1]:0"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "p"
"#,
        "bad-address",
        "has port 0",
        3,
        "services[0].vip",
    ),
    whole(
        "unit address with a port",
        r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "192.0.2.1:7000"
roles = ["forwarder", "classifier"]
"#,
        "bad-address",
        "\"192.0.2.1:7000\" is not an IP address",
        8,
        "cluster.units[0].address",
    ),
    case(
        "duplicate VIP",
        r#"[[services]]
name = "web"
vip = "198.51.100.10:80"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "p"

[[services]]
name = "web-too"
vip = "198.51.100.10:80"
protocol = "tcp"
mode = "packet"
delivery = "tunnel"
pool = "p"
"#,
        "duplicate-vip",
        "VIP 198.51.100.10:80/tcp is already used by service \"web\"",
        11,
        "services[1].vip",
    ),
    case(
        "undefined pool",
        r#"[[services]]
name = "s"
vip = "198.51.100.1:80"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "pp"
"#,
        "undefined-pool",
        "pool \"pp\" is not defined",
        7,
        "services[0].pool",
    ),
    case(
        "undefined health check",
        r#"[[pools]]
name = "q"
health_check = "missing"

[[pools.hosts]]
id = 501
name = "h1"
address = "192.0.2.5:80"
app = "a"
"#,
        "undefined-check",
        "health check \"missing\" is not defined",
        3,
        "pools[0].health_check",
    ),
    case(
        "undefined listener",
        r#"[[services]]
name = "s"
vip = "198.51.100.1:80"
protocol = "tcp"
mode = "request"
listener = "front"
pool = "p"
"#,
        "undefined-listener",
        "listener \"front\" is not defined",
        6,
        "services[0].listener",
    ),
    case(
        "undefined certificate",
        r#"[[listeners]]
name = "l"
address = "198.51.100.1:443"
protocol = "https"
certificates = ["nope"]
"#,
        "undefined-certificate",
        "certificate \"nope\" is not defined",
        5,
        "listeners[0].certificates[0]",
    ),
    whole(
        "unreadable secret file",
        r#"[cluster]
id = "t"
secret_file = "missing.key"

[[cluster.units]]
name = "lb"
id = 1
address = "192.0.2.1"
roles = ["forwarder", "classifier"]
"#,
        "unreadable-secret",
        "cannot read cluster secret",
        3,
        "cluster.secret_file",
    ),
    whole(
        "short secret",
        r#"[cluster]
id = "t"
secret_file = "short.key"

[[cluster.units]]
name = "lb"
id = 1
address = "192.0.2.1"
roles = ["forwarder", "classifier"]
"#,
        "short-secret",
        "at least 32 are needed",
        3,
        "cluster.secret_file",
    ),
    whole(
        "duplicate unit name",
        r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "192.0.2.1"
roles = ["forwarder", "classifier"]

[[cluster.units]]
name = "lb"
id = 2
address = "192.0.2.2"
roles = ["forwarder", "classifier"]
"#,
        "duplicate-name",
        "unit name \"lb\" is already used by cluster.units[0]",
        12,
        "cluster.units[1].name",
    ),
    whole(
        "duplicate unit id",
        r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb1"
id = 7
address = "192.0.2.1"
roles = ["forwarder", "classifier"]

[[cluster.units]]
name = "lb2"
id = 7
address = "192.0.2.2"
roles = ["forwarder", "classifier"]
"#,
        "duplicate-id",
        "unit id 7 is already used",
        13,
        "cluster.units[1].id",
    ),
    case(
        "duplicate pool name",
        r#"[[pools]]
name = "p"

[[pools.hosts]]
id = 501
name = "h1"
address = "192.0.2.5:80"
app = "a"
"#,
        "duplicate-name",
        "pool name \"p\" is already used by pools[0]",
        // The case's pool comes first in the file; the suffix's pool `p` is the duplicate,
        // at case line 9 + 3.
        12,
        "pools[1].name",
    ),
    case(
        "host id equal to an LB unit id",
        r#"[[pools]]
name = "q"

[[pools.hosts]]
id = 60000
name = "h1"
address = "192.0.2.5:80"
app = "a"
"#,
        "duplicate-id",
        "host id 60000 is already used by cluster.units[0]",
        5,
        "pools[0].hosts[0].id",
    ),
    case(
        "duplicate host id across pools",
        r#"[[pools]]
name = "q"

[[pools.hosts]]
id = 900
name = "h1"
address = "192.0.2.5:80"
app = "a"
"#,
        "duplicate-id",
        "host id 900 is already used by pools[0].hosts[0]",
        15,
        "pools[1].hosts[0].id",
    ),
    case(
        "duplicate host name",
        r#"[[pools]]
name = "q"

[[pools.hosts]]
id = 501
name = "web"
address = "192.0.2.5:80"
app = "a"

[[pools.hosts]]
id = 2
name = "web"
address = "192.0.2.6:80"
app = "a"
"#,
        "duplicate-name",
        "host name \"web\" is already used by pools[0].hosts[0]",
        12,
        "pools[0].hosts[1].name",
    ),
    case(
        "capacity 100",
        r#"[[pools]]
name = "q"

[[pools.hosts]]
id = 501
name = "h1"
address = "192.0.2.5:80"
app = "a"
capacity = 100
"#,
        "out-of-range",
        "capacity 100 is out of range",
        9,
        "pools[0].hosts[0].capacity",
    ),
    case(
        "negative host id",
        r#"[[pools]]
name = "q"

[[pools.hosts]]
id = -1
name = "h1"
address = "192.0.2.5:80"
app = "a"
"#,
        "out-of-range",
        "id -1 is out of range",
        5,
        "pools[0].hosts[0].id",
    ),
    case(
        "rise 0",
        r#"[[health_checks]]
name = "c"
kind = "tcp"
rise = 0
"#,
        "out-of-range",
        "rise 0 is out of range",
        4,
        "health_checks[0].rise",
    ),
    case(
        "expect_status 700",
        r#"[[health_checks]]
name = "c"
kind = "http"
path = "/"
expect_status = 700
"#,
        "out-of-range",
        "expect_status 700 is out of range",
        5,
        "health_checks[0].expect_status",
    ),
    case(
        "timeout not below interval",
        r#"[[health_checks]]
name = "c"
kind = "tcp"
interval = "2s"
timeout = "2s"
"#,
        "conflicting-settings",
        "timeout 2s is not shorter than interval 2s",
        5,
        "health_checks[0].timeout",
    ),
    case(
        "short interval against the default timeout",
        r#"[[health_checks]]
name = "c"
kind = "tcp"
interval = "500ms"
"#,
        "conflicting-settings",
        "timeout 1s (default) is not shorter than interval 500ms",
        4,
        "health_checks[0].interval",
    ),
    case(
        "bad duration",
        r#"[[health_checks]]
name = "c"
kind = "tcp"
interval = "2 parsecs"
"#,
        "bad-duration",
        "invalid duration \"2 parsecs\"",
        4,
        "health_checks[0].interval",
    ),
    case(
        "duration without unit",
        r#"[[health_checks]]
name = "c"
kind = "tcp"
timeout = 1
"#,
        "bad-duration",
        "expected a duration string",
        4,
        "health_checks[0].timeout",
    ),
    case(
        "bad enum value",
        r#"[[services]]
name = "s"
vip = "198.51.100.1:80"
protocol = "tcp"
mode = "magic"
delivery = "nat"
pool = "p"
"#,
        "bad-value",
        "unknown mode \"magic\"",
        5,
        "services[0].mode",
    ),
    case(
        "missing required field",
        r#"[[services]]
name = "s"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "p"
"#,
        "missing-field",
        "service has no `vip`",
        1,
        "services[0].vip",
    ),
    case(
        "https listener without certificates",
        r#"[[listeners]]
name = "secure"
address = "198.51.100.1:443"
protocol = "https"
"#,
        "missing-field",
        "https listener \"secure\" has no certificates",
        1,
        "listeners[0].certificates",
    ),
    case(
        "certificates on an http listener",
        r#"[[listeners]]
name = "plain"
address = "198.51.100.1:80"
protocol = "http"
certificates = ["good"]

[[tls.certificates]]
name = "good"
cert_file = "good.cert.pem"
key_file = "good.key.pem"
server_names = ["www.example.com"]
"#,
        "conflicting-settings",
        "`certificates` only applies to https listeners",
        5,
        "listeners[0].certificates",
    ),
    case(
        "two listeners on one address",
        r#"[[listeners]]
name = "a"
address = "198.51.100.1:80"
protocol = "http"

[[listeners]]
name = "b"
address = "198.51.100.1:80"
protocol = "h2c"
"#,
        "duplicate-address",
        "address 198.51.100.1:80 is already used by listeners[0]",
        8,
        "listeners[1].address",
    ),
    whole(
        "forwarder-only unit without classifier",
        r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "cls"
id = 1
address = "192.0.2.1"
roles = ["classifier"]

[[cluster.units]]
name = "fwd"
id = 2
address = "192.0.2.2"
roles = ["forwarder"]
"#,
        "no-classifier",
        "forwarder unit \"fwd\" has no classifier role and names no classifier",
        11,
        "cluster.units[1].classifier",
    ),
    whole(
        "classifier pointing at a unit without the classifier role",
        r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "router"
id = 1
address = "192.0.2.1"
roles = ["router"]

[[cluster.units]]
name = "fwd"
id = 2
address = "192.0.2.2"
roles = ["forwarder"]
classifier = "router"
"#,
        "not-a-classifier",
        "unit \"router\" does not have the classifier role",
        16,
        "cluster.units[1].classifier",
    ),
    whole(
        "classifier naming an undefined unit",
        r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "cls"
id = 1
address = "192.0.2.1"
roles = ["classifier"]

[[cluster.units]]
name = "fwd"
id = 2
address = "192.0.2.2"
roles = ["forwarder"]
classifier = "clss"
"#,
        "undefined-unit",
        "unit \"clss\" is not defined",
        16,
        "cluster.units[1].classifier",
    ),
    whole(
        "TOML syntax error",
        r#"[cluster]
id = "t"
secret_file = "cluster.key

[[cluster.units]]
"#,
        "invalid-toml",
        "invalid basic string",
        3,
        "",
    ),
    case(
        "wrong type",
        r#"[[pools]]
name = "q"

[[pools.hosts]]
id = 501
name = "h1"
address = "192.0.2.5:80"
app = "a"
capacity = "50"
"#,
        "wrong-type",
        "expected an integer, found a string",
        9,
        "pools[0].hosts[0].capacity",
    ),
    whole(
        "empty roles",
        r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "192.0.2.1"
roles = []
"#,
        "empty-list",
        "the unit has no roles",
        9,
        "cluster.units[0].roles",
    ),
    whole(
        "duplicate role",
        r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "192.0.2.1"
roles = ["forwarder", "classifier", "forwarder"]
"#,
        "duplicate-entry",
        "role \"forwarder\" is listed twice",
        9,
        "cluster.units[0].roles[2]",
    ),
    whole(
        "unknown role",
        r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "192.0.2.1"
roles = ["forwarder", "clasifier"]
"#,
        "bad-value",
        "unknown role \"clasifier\"",
        9,
        "cluster.units[0].roles[1]",
    ),
    whole(
        "no [cluster] table",
        "[[pools]]\nname = \"p\"\n\n[[pools.hosts]]\nid = 1\nname = \"h\"\naddress = \"192.0.2.5:80\"\napp = \"a\"\n",
        "missing-field",
        "the configuration has no [cluster] table",
        1,
        "cluster",
    ),
    case(
        "pool without hosts",
        "[[pools]]\nname = \"empty\"\n",
        "missing-field",
        "pool \"empty\" has no hosts",
        1,
        "pools[0].hosts",
    ),
    case(
        "packet mode without delivery",
        r#"[[services]]
name = "s"
vip = "198.51.100.1:80"
protocol = "tcp"
mode = "packet"
pool = "p"
"#,
        "missing-field",
        "packet-mode service has no `delivery`",
        1,
        "services[0].delivery",
    ),
    case(
        "request mode with delivery",
        r#"[[services]]
name = "s"
vip = "198.51.100.1:80"
protocol = "tcp"
mode = "request"
delivery = "nat"
listener = "l"
pool = "p"

[[listeners]]
name = "l"
address = "198.51.100.1:80"
protocol = "http"
"#,
        "conflicting-settings",
        "`delivery` does not apply to request mode",
        6,
        "services[0].delivery",
    ),
    case(
        "UDP in request mode",
        r#"[[services]]
name = "s"
vip = "198.51.100.1:80"
protocol = "udp"
mode = "request"
listener = "l"
pool = "p"

[[listeners]]
name = "l"
address = "198.51.100.1:80"
protocol = "http"
"#,
        "conflicting-settings",
        "request mode needs TCP, but the service is UDP",
        4,
        "services[0].protocol",
    ),
    case(
        "cookie affinity without cookie name",
        r#"[[services]]
name = "s"
vip = "198.51.100.1:80"
protocol = "tcp"
mode = "request"
listener = "l"
pool = "p"
affinity = { kind = "cookie" }

[[listeners]]
name = "l"
address = "198.51.100.1:80"
protocol = "http"
"#,
        "missing-field",
        "cookie affinity has no `cookie` name",
        8,
        "services[0].affinity.cookie",
    ),
    case(
        "cookie affinity in packet mode",
        r#"[[services]]
name = "s"
vip = "198.51.100.1:80"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "p"

[services.affinity]
kind = "cookie"
cookie = "SID"
"#,
        "conflicting-settings",
        "cookie affinity needs to read the connection's content",
        10,
        "services[0].affinity.kind",
    ),
    case(
        "app-cookie affinity without cookie name",
        r#"[[services]]
name = "s"
vip = "198.51.100.1:80"
protocol = "tcp"
mode = "request"
listener = "l"
pool = "p"
affinity = { kind = "app-cookie", timeout = "20m" }

[[listeners]]
name = "l"
address = "198.51.100.1:80"
protocol = "http"
"#,
        "missing-field",
        "app-cookie affinity has no `cookie` name",
        8,
        "services[0].affinity.cookie",
    ),
    case(
        "app-cookie affinity with a header name",
        r#"[[services]]
name = "s"
vip = "198.51.100.1:80"
protocol = "tcp"
mode = "request"
listener = "l"
pool = "p"

[services.affinity]
kind = "app-cookie"
cookie = "JSESSIONID"
header = "X-Tenant"

[[listeners]]
name = "l"
address = "198.51.100.1:80"
protocol = "http"
"#,
        "conflicting-settings",
        "`header` does not apply to app-cookie affinity",
        12,
        "services[0].affinity.header",
    ),
    case(
        "app-cookie affinity with a bad cookie name",
        r#"[[services]]
name = "s"
vip = "198.51.100.1:80"
protocol = "tcp"
mode = "request"
listener = "l"
pool = "p"
affinity = { kind = "app-cookie", cookie = "J SESSION" }

[[listeners]]
name = "l"
address = "198.51.100.1:80"
protocol = "http"
"#,
        "bad-value",
        "\"J SESSION\" is not a valid cookie name",
        8,
        "services[0].affinity.cookie",
    ),
    case(
        "app-cookie affinity in migrate mode",
        r#"[[services]]
name = "s"
vip = "198.51.100.1:80"
protocol = "tcp"
mode = "migrate"
delivery = "nat"
pool = "p"

[services.affinity]
kind = "app-cookie"
cookie = "JSESSIONID"
"#,
        "conflicting-settings",
        "app-cookie affinity is applied by the request router, which serves request mode only",
        10,
        "services[0].affinity.kind",
    ),
    case(
        "http check path without leading slash",
        r#"[[health_checks]]
name = "c"
kind = "http"
path = "healthz"
"#,
        "bad-value",
        "path \"healthz\" is not an absolute request path",
        4,
        "health_checks[0].path",
    ),
    case(
        "exec check with empty command",
        r#"[[health_checks]]
name = "c"
kind = "exec"
command = []
"#,
        "empty-list",
        "exec check has an empty `command`",
        4,
        "health_checks[0].command",
    ),
    case(
        "http setting on a tcp check",
        r#"[[health_checks]]
name = "c"
kind = "tcp"
path = "/"
"#,
        "conflicting-settings",
        "`path` only applies to http checks, not to tcp checks",
        4,
        "health_checks[0].path",
    ),
    case(
        "certificate file without a PEM certificate",
        r#"[[certificates]]
name = "bad"
cert_file = "not-pem.txt"
key_file = "good.key.pem"
server_names = ["www.example.com"]
"#,
        "bad-pem",
        "does not contain a \"-----BEGIN CERTIFICATE-----\" block",
        3,
        "certificates[0].cert_file",
    ),
    case(
        "unreadable key file",
        r#"[[tls.certificates]]
name = "bad"
cert_file = "good.cert.pem"
key_file = "absent.key.pem"
server_names = ["www.example.com"]
"#,
        "unreadable-pem",
        "cannot read",
        4,
        "tls.certificates[0].key_file",
    ),
    case(
        "certificate with no server names",
        r#"[[tls.certificates]]
name = "c"
cert_file = "good.cert.pem"
key_file = "good.key.pem"
server_names = []
"#,
        "empty-list",
        "the certificate has no server names",
        5,
        "tls.certificates[0].server_names",
    ),
    case(
        "two certificates of a listener claim one server name",
        r#"[[listeners]]
name = "l"
address = "198.51.100.1:443"
protocol = "https"
certificates = ["one", "two"]

[[tls.certificates]]
name = "one"
cert_file = "good.cert.pem"
key_file = "good.key.pem"
server_names = ["www.example.com"]

[[tls.certificates]]
name = "two"
cert_file = "good.cert.pem"
key_file = "good.key.pem"
server_names = ["api.example.com", "WWW.example.com"]
"#,
        "duplicate-server-name",
        "server name \"www.example.com\" is served by both certificate \"one\" and certificate \"two\"",
        5,
        "listeners[0].certificates[1]",
    ),
    case(
        "bad name",
        r#"[[pools]]
name = "web servers"

[[pools.hosts]]
id = 501
name = "h1"
address = "192.0.2.5:80"
app = "a"
"#,
        "bad-name",
        "name \"web servers\" has characters that are not allowed",
        2,
        "pools[0].name",
    ),
    whole(
        "app-cookie affinity without a session-store unit",
        r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "192.0.2.1"
roles = ["router", "health-cache"]

[[services]]
name = "s"
vip = "198.51.100.1:80"
protocol = "tcp"
mode = "request"
listener = "l"
pool = "p"
affinity = { kind = "app-cookie", cookie = "JSESSIONID" }

[[listeners]]
name = "l"
address = "198.51.100.1:80"
protocol = "http"

[[pools]]
name = "p"

[[pools.hosts]]
id = 501
name = "h1"
address = "192.0.2.5:80"
app = "a"
"#,
        "missing-role",
        "uses app-cookie affinity, which looks sessions up through session tracking, but no unit has the session-store role",
        18,
        "services[0].affinity.kind",
    ),
    whole(
        "request service without a router unit",
        r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "192.0.2.1"
roles = ["forwarder", "classifier"]

[[services]]
name = "s"
vip = "198.51.100.1:80"
protocol = "tcp"
mode = "request"
listener = "l"
pool = "p"

[[listeners]]
name = "l"
address = "198.51.100.1:80"
protocol = "http"

[[pools]]
name = "p"

[[pools.hosts]]
id = 501
name = "h1"
address = "192.0.2.5:80"
app = "a"
"#,
        "missing-role",
        "service \"s\" uses request mode, but no unit has the router role",
        15,
        "services[0].mode",
    ),
    case(
        "certificates spelled both ways",
        r#"[[certificates]]
name = "a"
cert_file = "good.cert.pem"
key_file = "good.key.pem"
server_names = ["a.example.com"]

[[tls.certificates]]
name = "b"
cert_file = "good.cert.pem"
key_file = "good.key.pem"
server_names = ["b.example.com"]
"#,
        "conflicting-settings",
        "certificates are defined both as [[certificates]] and as [[tls.certificates]]",
        1,
        "certificates",
    ),
    case(
        "array of tables written as a table",
        "[services]\nname = \"s\"\n",
        "wrong-type",
        "expected an array of tables, found a table",
        1,
        "services",
    ),
    whole(
        "unit control port 0",
        r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "192.0.2.1"
roles = ["forwarder", "classifier"]
control_port = 0
"#,
        "out-of-range",
        "control_port 0 is out of range",
        10,
        "cluster.units[0].control_port",
    ),
    whole(
        "unit admin address without a port",
        r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "192.0.2.1"
roles = ["forwarder", "classifier"]
admin = "127.0.0.1"
"#,
        "bad-address",
        "\"127.0.0.1\" is not an IP:port address",
        10,
        "cluster.units[0].admin",
    ),
    case(
        "unknown field in [health]",
        "[health]\nheartbeat = \"1s\"\n",
        "unknown-field",
        "unknown field `heartbeat` in [health]",
        2,
        "health.heartbeat",
    ),
    case(
        "zero health duration",
        "[health]\ntoken_validity = \"0s\"\n",
        "bad-duration",
        "token_validity must be longer than zero",
        2,
        "health.token_validity",
    ),
    case(
        "host ages out before missing two heartbeats",
        "[health]\nheartbeat_interval = \"2s\"\nhost_dead_after = \"3s\"\n",
        "conflicting-settings",
        "host_dead_after 3s is shorter than twice heartbeat_interval 2s",
        3,
        "health.host_dead_after",
    ),
    case(
        "unit given up on before a postulate retry",
        "[health]\npostulate_interval = \"40s\"\n",
        "conflicting-settings",
        "unit_give_up_after 30s (default) is not longer than postulate_interval 40s",
        2,
        "health.postulate_interval",
    ),
    case(
        "load hysteresis too large",
        "[health]\nload_hysteresis = 60\n",
        "out-of-range",
        "load_hysteresis 60 is out of range",
        2,
        "health.load_hysteresis",
    ),
    case(
        "first postulate later than a retry",
        "[health]\npostulate_interval = \"100ms\"\npostulate_delay = \"300ms\"\n",
        "conflicting-settings",
        "postulate_delay 300ms is longer than postulate_interval 100ms",
        3,
        "health.postulate_delay",
    ),
    case(
        "first postulate later than the default retry",
        "[health]\npostulate_delay = \"1s\"\n",
        "conflicting-settings",
        "postulate_delay 1s is longer than postulate_interval 500ms (default)",
        2,
        "health.postulate_delay",
    ),
    case(
        "zero postulate delay",
        "[health]\npostulate_delay = \"0s\"\n",
        "bad-duration",
        "postulate_delay must be longer than zero",
        2,
        "health.postulate_delay",
    ),
    case(
        "load smoothing of zero",
        "[health]\nload_smoothing = 0.0\n",
        "out-of-range",
        "load_smoothing 0 is out of range",
        2,
        "health.load_smoothing",
    ),
    case(
        "load smoothing above one",
        "[health]\nload_smoothing = 1.5\n",
        "out-of-range",
        "load_smoothing 1.5 is out of range",
        2,
        "health.load_smoothing",
    ),
    case(
        "negative load smoothing",
        "[health]\nload_smoothing = -0.2\n",
        "out-of-range",
        "load_smoothing -0.2 is out of range",
        2,
        "health.load_smoothing",
    ),
    case(
        "infinite load smoothing",
        "[health]\nload_smoothing = inf\n",
        "out-of-range",
        "expected a finite number",
        2,
        "health.load_smoothing",
    ),
    case(
        "load smoothing as a string",
        "[health]\nload_smoothing = \"0.3\"\n",
        "wrong-type",
        "expected a number, found a string",
        2,
        "health.load_smoothing",
    ),
    case(
        "agent API off loopback",
        "[agent]\napi = \"0.0.0.0:9181\"\n",
        "bad-address",
        "agent API address 0.0.0.0:9181 is not a loopback address",
        2,
        "agent.api",
    ),
    case(
        "unit acts as a string",
        "[agent]\nunit_acts = \"no\"\n",
        "wrong-type",
        "expected a boolean (true or false), found a string",
        2,
        "agent.unit_acts",
    ),
    case(
        "empty agent socket path",
        "[agent]\nsocket = \"\"\n",
        "bad-value",
        "the socket path is empty",
        2,
        "agent.socket",
    ),
    case(
        "systemd unit and pid file on one host",
        r#"[[pools]]
name = "q"

[[pools.hosts]]
id = 501
name = "h1"
address = "192.0.2.5:80"
app = "a"
systemd_unit = "nginx.service"
pidfile = "/run/nginx.pid"
"#,
        "conflicting-settings",
        "a host takes `systemd_unit` or `pidfile`, not both",
        10,
        "pools[0].hosts[0].pidfile",
    ),
    case(
        "systemd unit name that reads as an option",
        r#"[[pools]]
name = "q"

[[pools.hosts]]
id = 501
name = "h1"
address = "192.0.2.5:80"
app = "a"
systemd_unit = "--user"
"#,
        "bad-value",
        "systemd unit name \"--user\" has characters that are not allowed",
        9,
        "pools[0].hosts[0].systemd_unit",
    ),
    case(
        "empty pid file path",
        r#"[[pools]]
name = "q"

[[pools.hosts]]
id = 501
name = "h1"
address = "192.0.2.5:80"
app = "a"
pidfile = ""
"#,
        "bad-value",
        "the pid file path is empty",
        9,
        "pools[0].hosts[0].pidfile",
    ),
    case(
        "host group names an undefined host",
        "[[host_groups]]\nname = \"g\"\nhosts = [\"h900\", \"h901\"]\n",
        "undefined-host",
        "host \"h901\" is not defined",
        3,
        "host_groups[0].hosts[1]",
    ),
    case(
        "host group of one host",
        "[[host_groups]]\nname = \"g\"\nhosts = [\"h900\"]\n",
        "bad-value",
        "host group \"g\" has 1 host",
        3,
        "host_groups[0].hosts",
    ),
    case(
        "host listed twice in a group",
        "[[host_groups]]\nname = \"g\"\nhosts = [\"h900\", \"h900\"]\n",
        "duplicate-entry",
        "host \"h900\" is listed twice",
        3,
        "host_groups[0].hosts[1]",
    ),
    case(
        "host in two groups",
        r#"[[pools]]
name = "q"

[[pools.hosts]]
id = 501
name = "h1"
address = "192.0.2.5:80"
app = "a"

[[pools.hosts]]
id = 502
name = "h2"
address = "192.0.2.6:80"
app = "a"

[[host_groups]]
name = "g1"
hosts = ["h1", "h2"]

[[host_groups]]
name = "g2"
hosts = ["h900", "h2"]
"#,
        "conflicting-settings",
        "host \"h2\" is already in host group \"g1\"",
        22,
        "host_groups[1].hosts[1]",
    ),
    case(
        "gossip on the agent's own port",
        r#"[agent]
listen = "0.0.0.0:9300"

[[pools]]
name = "q"

[[pools.hosts]]
id = 501
name = "h1"
address = "192.0.2.5:80"
app = "a"

[[host_groups]]
name = "g"
hosts = ["h1", "h900"]
gossip_port = 9300
"#,
        "conflicting-settings",
        "gossip_port 9300 is also the agent's listen port",
        16,
        "host_groups[0].gossip_port",
    ),
    whole(
        "interfaces on a unit without the forwarder role",
        r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "cls"
id = 1
address = "192.0.2.1"
roles = ["classifier", "health-cache"]
forwarder = { interfaces = ["eth0"] }

[[cluster.units]]
name = "fwd"
id = 2
address = "192.0.2.2"
roles = ["forwarder"]
classifier = "cls"
forwarder = { interfaces = ["eth0"] }
"#,
        "conflicting-settings",
        "`interfaces` is set on a unit without the forwarder role",
        10,
        "cluster.units[0].forwarder.interfaces",
    ),
    whole(
        "forwarder settings without interfaces",
        r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "192.0.2.1"
roles = ["forwarder", "classifier"]

[cluster.units.forwarder]
attach = "tc"
"#,
        "missing-field",
        "forwarder settings have no `interfaces`",
        11,
        "cluster.units[0].forwarder.interfaces",
    ),
    whole(
        "unknown attach point",
        r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "192.0.2.1"
roles = ["forwarder", "classifier"]
forwarder = { interfaces = ["eth0"], attach = "xdp-native" }
"#,
        "bad-value",
        "xdp-native",
        10,
        "cluster.units[0].forwarder.attach",
    ),
    whole(
        "NAT port range upside down",
        r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "192.0.2.1"
roles = ["forwarder", "classifier"]
forwarder = { interfaces = ["eth0"], nat_ports = "32767-20000" }
"#,
        "bad-value",
        "nat_ports \"32767-20000\" is not a port range",
        10,
        "cluster.units[0].forwarder.nat_ports",
    ),
    whole(
        "plumbing port equal to the control port",
        r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "192.0.2.1"
roles = ["forwarder", "classifier"]
control_port = 9000
forwarder = { interfaces = ["eth0"], plumbing_port = 9000 }
"#,
        "conflicting-settings",
        "plumbing_port 9000 is also unit lb's control_port",
        11,
        "cluster.units[0].forwarder.plumbing_port",
    ),
    whole(
        "NAT sources on a forwarder-only unit",
        r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "cls"
id = 1
address = "192.0.2.1"
roles = ["classifier"]

[[cluster.units]]
name = "fwd"
id = 2
address = "192.0.2.2"
roles = ["forwarder"]
classifier = "cls"
forwarder = { interfaces = ["eth0"], nat_sources = ["192.0.2.2"] }
"#,
        "conflicting-settings",
        "`nat_sources` is set on a unit without the classifier role",
        17,
        "cluster.units[1].forwarder.nat_sources",
    ),
    whole(
        "full NAT service without NAT sources",
        r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "192.0.2.1"
roles = ["forwarder", "classifier"]
forwarder = { interfaces = ["eth0"] }

[[services]]
name = "s"
vip = "198.51.100.10:80"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "p"

[[pools]]
name = "p"

[[pools.hosts]]
id = 900
name = "h900"
address = "192.0.2.90:80"
app = "a"
"#,
        "missing-field",
        "unit \"lb\" classifies, and service \"s\" uses full NAT, but the unit has no `nat_sources`",
        10,
        "cluster.units[0].forwarder.nat_sources",
    ),
    case(
        "firewall prefix with host bits",
        r#"[[services]]
name = "s"
vip = "198.51.100.10:80"
protocol = "tcp"
mode = "packet"
delivery = "half-nat"
pool = "p"
firewall = { allow = ["198.18.0.1/15"] }
"#,
        "bad-address",
        "\"198.18.0.1/15\" has host bits set after the prefix length",
        8,
        "services[0].firewall.allow[0]",
    ),
    case(
        "firewall burst without a rate",
        r#"[[services]]
name = "s"
vip = "198.51.100.10:80"
protocol = "tcp"
mode = "packet"
delivery = "half-nat"
pool = "p"
firewall = { deny = ["203.0.113.0/24"], burst = 10 }
"#,
        "conflicting-settings",
        "`burst` without `new_connections_per_second`",
        8,
        "services[0].firewall.burst",
    ),
    case(
        "zero idle timeout",
        r#"[classifier]
tcp_idle_timeout = "0s"
"#,
        "bad-duration",
        "tcp_idle_timeout must be longer than zero",
        2,
        "classifier.tcp_idle_timeout",
    ),
    case(
        "unknown field in [router]",
        r#"[router]
max_header_bites = 100
"#,
        "unknown-field",
        "unknown field `max_header_bites` in [router]",
        2,
        "router.max_header_bites",
    ),
    case(
        "zero header read timeout",
        r#"[router]
header_read_timeout = "0s"
"#,
        "bad-duration",
        "header_read_timeout must be longer than zero",
        2,
        "router.header_read_timeout",
    ),
    case(
        "no upstream connections allowed",
        r#"[router.upstream]
max_connections_per_host = 0
"#,
        "out-of-range",
        "max_connections_per_host 0 is out of range",
        2,
        "router.upstream.max_connections_per_host",
    ),
    case(
        "quoted boolean",
        r#"[router.upstream]
http2 = "yes"
"#,
        "wrong-type",
        "expected a boolean (true or false), found a string",
        2,
        "router.upstream.http2",
    ),
    case(
        "request id header with a space",
        r#"[router]
request_id_header = "X Request"
"#,
        "bad-value",
        "\"X Request\" is not a valid request id header name",
        2,
        "router.request_id_header",
    ),
    case(
        "routes on a packet service",
        r#"[[services]]
name = "s"
vip = "192.0.2.5:80"
protocol = "tcp"
mode = "packet"
delivery = "nat"
pool = "p"

[[services.routes]]
pool = "p"
"#,
        "conflicting-settings",
        "`routes` only apply to request-mode services",
        9,
        "services[0].routes",
    ),
    case(
        "route to an undefined pool",
        concat!(
            request_service!(),
            r#"pool = "nope"
"#
        ),
        "undefined-pool",
        "pool \"nope\" is not defined",
        15,
        "services[0].routes[0].pool",
    ),
    case(
        "route without a pool",
        concat!(
            request_service!(),
            r#"path = "/a"
"#
        ),
        "missing-field",
        "route has no `pool`",
        14,
        "services[0].routes[0].pool",
    ),
    case(
        "route with two path conditions",
        concat!(
            request_service!(),
            r#"path_prefix = "/a/"
path_regex = "^/a"
pool = "p"
"#
        ),
        "conflicting-settings",
        "a route takes one path condition, but has `path_prefix` and `path_regex`",
        16,
        "services[0].routes[0].path_regex",
    ),
    case(
        "route regex that does not compile",
        concat!(
            request_service!(),
            r#"path_regex = "^/(["
pool = "p"
"#
        ),
        "bad-value",
        "path_regex \"^/([\" does not compile",
        15,
        "services[0].routes[0].path_regex",
    ),
    case(
        "relative route path prefix",
        concat!(
            request_service!(),
            r#"path_prefix = "api/"
pool = "p"
"#
        ),
        "bad-value",
        "\"api/\" is not an absolute request path",
        15,
        "services[0].routes[0].path_prefix",
    ),
    case(
        "rewrite without a prefix match",
        concat!(
            request_service!(),
            r#"path = "/a"
rewrite_prefix = "/"
pool = "p"
"#
        ),
        "conflicting-settings",
        "`rewrite_prefix` without `path_prefix`",
        16,
        "services[0].routes[0].rewrite_prefix",
    ),
    case(
        "route method with a space",
        concat!(
            request_service!(),
            r#"methods = ["GET", "BAD METHOD"]
pool = "p"
"#
        ),
        "bad-value",
        "\"BAD METHOD\" is not an HTTP method",
        15,
        "services[0].routes[0].methods[1]",
    ),
    case(
        "route header name with a space",
        concat!(
            request_service!(),
            r#"headers = [{ name = "X Canary" }]
pool = "p"
"#
        ),
        "bad-value",
        "\"X Canary\" is not a valid header name",
        15,
        "services[0].routes[0].headers[0].name",
    ),
    case(
        "added header without a value",
        concat!(
            request_service!(),
            r#"add_headers = [{ name = "X-A" }]
pool = "p"
"#
        ),
        "missing-field",
        "a header to add has no `value`",
        15,
        "services[0].routes[0].add_headers[0].value",
    ),
    case(
        "header value with a control character",
        concat!(
            request_service!(),
            r#"headers = [{ name = "X-A", value = "a\u0001" }]
pool = "p"
"#
        ),
        "bad-value",
        "header value holds characters HTTP does not allow",
        15,
        "services[0].routes[0].headers[0].value",
    ),
    case(
        "route host with a port",
        concat!(
            request_service!(),
            r#"host = "example.com:80"
pool = "p"
"#
        ),
        "bad-value",
        "\"example.com:80\" is not a host name",
        15,
        "services[0].routes[0].host",
    ),
    case(
        "unknown field in a route",
        concat!(
            request_service!(),
            r#"pool = "p"
prefix = "/a"
"#
        ),
        "unknown-field",
        "unknown field `prefix` in route",
        16,
        "services[0].routes[0].prefix",
    ),
    case(
        "a listener on the unit's admin address",
        r#"[[listeners]]
name = "l"
address = "127.0.0.1:9180"
protocol = "http"

[[services]]
name = "s"
vip = "127.0.0.1:9180"
protocol = "tcp"
mode = "request"
listener = "l"
pool = "p"
"#,
        "conflicting-settings",
        "listener address 127.0.0.1:9180 is also unit lb's admin API address",
        3,
        "listeners[0].address",
    ),
    whole(
        "a control port on the default session port",
        r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "192.0.2.1"
roles = ["session-store", "health-cache"]
control_port = 9174
"#,
        "conflicting-settings",
        "control_port 9174 is also unit lb's session port (sessions.port)",
        10,
        "cluster.units[0].control_port",
    ),
    whole(
        "a host beside a loopback unit on its admin port",
        r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "127.0.0.1"
roles = ["health-cache"]

[[pools]]
name = "p"

[[pools.hosts]]
id = 101
name = "h1"
address = "127.0.0.1:9180"
app = "a"
"#,
        "conflicting-settings",
        "host address 127.0.0.1:9180 is also unit lb's admin API address",
        17,
        "pools[0].hosts[0].address",
    ),
    whole(
        "an agent beside a unit on its control port",
        r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "192.0.2.1"
roles = ["health-cache"]

[agent]
listen = "0.0.0.0:9170"

[[pools]]
name = "p"

[[pools.hosts]]
id = 101
name = "h1"
address = "192.0.2.1:8080"
app = "a"
"#,
        "conflicting-settings",
        "[agent] listen 0.0.0.0:9170 is also unit lb's control_port",
        12,
        "agent.listen",
    ),
    whole(
        "a control port on the port of the agents beside the unit",
        r#"[cluster]
id = "t"
secret_file = "cluster.key"

[[cluster.units]]
name = "lb"
id = 1
address = "192.0.2.1"
roles = ["health-cache"]
control_port = 9171

[[pools]]
name = "p"

[[pools.hosts]]
id = 101
name = "h1"
address = "192.0.2.1:8080"
app = "a"
"#,
        "conflicting-settings",
        "control_port 9171 is also the listen address of the agents beside it ([agent] listen)",
        10,
        "cluster.units[0].control_port",
    ),
    case(
        "sessions: unknown field",
        "[sessions]\nreplicaton = 1\n",
        "unknown-field",
        "unknown field `replicaton` in [sessions]",
        2,
        "sessions.replicaton",
    ),
    case(
        "sessions: replication word",
        "[sessions]\nreplication = \"all\"\n",
        "bad-value",
        "neither a level nor \"full\"",
        2,
        "sessions.replication",
    ),
    case(
        "sessions: replication too high",
        "[sessions]\nreplication = 256\n",
        "out-of-range",
        "replication 256 is out of range",
        2,
        "sessions.replication",
    ),
    case(
        "sessions: replication negative",
        "[sessions]\nreplication = -1\n",
        "out-of-range",
        "replication -1 is out of range",
        2,
        "sessions.replication",
    ),
    case(
        "sessions: replication wrong type",
        "[sessions]\nreplication = 1.5\n",
        "wrong-type",
        "replication",
        2,
        "sessions.replication",
    ),
    case(
        "sessions: port zero",
        "[sessions]\nport = 0\n",
        "out-of-range",
        "port 0 is out of range",
        2,
        "sessions.port",
    ),
    case(
        "sessions: port taken by the control port",
        "[sessions]\nport = 9170\n",
        "conflicting-settings",
        "sessions.port 9170 is also unit lb's control_port",
        2,
        "sessions.port",
    ),
    case(
        "sessions: zero resend interval",
        "[sessions]\nresend_interval = \"0s\"\n",
        "bad-duration",
        "resend_interval must be longer than zero",
        2,
        "sessions.resend_interval",
    ),
    case(
        "sessions: bad duration",
        "[sessions]\ncache_ttl = \"soon\"\n",
        "bad-duration",
        "invalid duration \"soon\"",
        2,
        "sessions.cache_ttl",
    ),
    case(
        "sessions: rebind before a resend",
        "[sessions]\nresend_interval = \"2s\"\nrebind_after = \"1s\"\n",
        "conflicting-settings",
        "rebind_after (1s) must be longer than resend_interval and keepalive_interval (2s)",
        3,
        "sessions.rebind_after",
    ),
    case(
        "sessions: cache size zero",
        "[sessions]\ncache_size = 0\n",
        "out-of-range",
        "cache_size 0 is out of range",
        2,
        "sessions.cache_size",
    ),
    case(
        "sessions: unknown session type",
        "[sessions.zombie]\ncookie = \"10s\"\n",
        "unknown-field",
        "unknown field `cookie` in [sessions.zombie]",
        2,
        "sessions.zombie.cookie",
    ),
    case(
        "sessions: zombie time too long",
        "[sessions.zombie]\nuser = \"100d\"\n",
        "out-of-range",
        "zombie time user is longer than the wire allows",
        2,
        "sessions.zombie.user",
    ),
    case(
        "route cache: no max_bytes",
        r#"[[listeners]]
name = "l"
address = "192.0.2.5:80"
protocol = "http"

[[services]]
name = "s"
vip = "192.0.2.5:80"
protocol = "tcp"
mode = "request"
listener = "l"
pool = "p"

[[services.routes]]
path_prefix = "/"
pool = "p"
cache = { default_ttl = "1s" }
"#,
        "missing-field",
        "a route cache has no `max_bytes`",
        17,
        "services[0].routes[0].cache.max_bytes",
    ),
    case(
        "route cache: max_bytes too small",
        r#"[[listeners]]
name = "l"
address = "192.0.2.5:80"
protocol = "http"

[[services]]
name = "s"
vip = "192.0.2.5:80"
protocol = "tcp"
mode = "request"
listener = "l"
pool = "p"

[[services.routes]]
path_prefix = "/"
pool = "p"
cache = { max_bytes = 10 }
"#,
        "out-of-range",
        "max_bytes 10 is out of range",
        17,
        "services[0].routes[0].cache.max_bytes",
    ),
    case(
        "route cache: object larger than the cache",
        r#"[[listeners]]
name = "l"
address = "192.0.2.5:80"
protocol = "http"

[[services]]
name = "s"
vip = "192.0.2.5:80"
protocol = "tcp"
mode = "request"
listener = "l"
pool = "p"

[[services.routes]]
path_prefix = "/"
pool = "p"
cache = { max_bytes = 4096, max_object_bytes = 8192 }
"#,
        "conflicting-settings",
        "max_object_bytes 8192 is larger than max_bytes 4096",
        17,
        "services[0].routes[0].cache.max_object_bytes",
    ),
    case(
        "route cache: zero ttl",
        r#"[[listeners]]
name = "l"
address = "192.0.2.5:80"
protocol = "http"

[[services]]
name = "s"
vip = "192.0.2.5:80"
protocol = "tcp"
mode = "request"
listener = "l"
pool = "p"

[[services.routes]]
path_prefix = "/"
pool = "p"
cache = { max_bytes = 4096, default_ttl = "0s" }
"#,
        "bad-duration",
        "default_ttl must be longer than zero",
        17,
        "services[0].routes[0].cache.default_ttl",
    ),
    case(
        "route cache: unknown field",
        r#"[[listeners]]
name = "l"
address = "192.0.2.5:80"
protocol = "http"

[[services]]
name = "s"
vip = "192.0.2.5:80"
protocol = "tcp"
mode = "request"
listener = "l"
pool = "p"

[[services.routes]]
path_prefix = "/"
pool = "p"
cache = { max_bytes = 4096, size = 1 }
"#,
        "unknown-field",
        "unknown field `size` in cache",
        17,
        "services[0].routes[0].cache.size",
    ),
];

/// A directory with the files the cases refer to.
fn fixture_dir() -> std::io::Result<tempfile::TempDir> {
    let dir = common::secret_dir()?;
    let path = dir.path();
    std::fs::write(path.join("short.key"), "tooshort\n")?;
    std::fs::write(
        path.join("good.cert.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )?;
    std::fs::write(
        path.join("good.key.pem"),
        "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n",
    )?;
    std::fs::write(path.join("not-pem.txt"), "hello\n")?;
    Ok(dir)
}

fn text_of(case: &Case) -> String {
    if case.wrapped {
        format!("{PREFIX}{}{SUFFIX}", case.toml)
    } else {
        case.toml.to_owned()
    }
}

fn check_in(dir: &Path, name: &str, text: &str) -> Result<Diagnostics, String> {
    match common::load_in(dir, name, text) {
        Ok(config) => Err(format!("accepted: {}", config.summary())),
        Err(diagnostics) => Ok(diagnostics),
    }
}

#[test]
fn each_kind_of_mistake_gets_its_own_located_message() -> std::io::Result<()> {
    let dir = fixture_dir()?;
    let mut failures = Vec::new();
    for case in CASES {
        let diagnostics = match check_in(dir.path(), case.name, &text_of(case)) {
            Ok(d) => d,
            Err(e) => {
                failures.push(format!("{}: {e}", case.name));
                continue;
            }
        };
        let line = if case.wrapped {
            case.line + PREFIX_LINES
        } else {
            case.line
        };
        let all: Vec<&Diagnostic> = diagnostics.iter().collect();
        let ok = all.len() == 1
            && all[0].code == case.code
            && all[0].message.contains(case.message)
            && all[0].line == line
            && all[0].field == case.field
            && all[0].column >= 1
            && all[0].hint.is_some();
        if !ok {
            failures.push(format!(
                "{}: expected exactly one [{}] at line {line}, field `{}`, message containing {:?}; got:\n{diagnostics}",
                case.name, case.code, case.field, case.message
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    Ok(())
}
