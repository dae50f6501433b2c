//! Config-entry and agent responses: the service-defaults list, proxy-defaults/global,
//! the gateway's own entry and an agent service never panic the decoders.
#![no_main]

use ingress_service_monitor::consul::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wire::decode_service_defaults(data);
    let _ = wire::decode_proxy_defaults(data);
    let _ = wire::decode_entry(data);
});
