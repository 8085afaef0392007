//! Encapsulation mapping protocol (message type `0x7_`, spec FIG. 38).
//!
//! The connection migrator tells tunnelers (at a forwarder and at a host)
//! which 32-bit flow id stands for which flow, so tunneled packets can
//! carry the flow id in their port fields without any size overhead.

use crate::encoding::{Reader, Wire, Writer};
use crate::error::DecodeError;
use crate::types::FlowTuple;

const UNBOUNDED: usize = usize::MAX;

/// Adds and removes flow-id mappings. Removals apply before additions, so
/// one message can re-point a flow id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncapMapping {
    /// Mappings to add or replace.
    pub add: Vec<FlowMapping>,
    /// Flow ids to remove.
    pub remove: Vec<u32>,
}

/// One flow id and the flow it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowMapping {
    /// The flow id carried in tunneled packets.
    pub flow_id: u32,
    /// The original flow.
    pub flow: FlowTuple,
}

impl Wire for FlowMapping {
    fn encode(&self, w: &mut Writer) {
        w.u32(self.flow_id);
        self.flow.encode(w);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            flow_id: r.u32("FlowMapping.flow_id")?,
            flow: FlowTuple::decode(r)?,
        })
    }
}

impl Wire for EncapMapping {
    fn encode(&self, w: &mut Writer) {
        w.list_of("EncapMapping.add", &self.add, UNBOUNDED);
        w.list("EncapMapping.remove", &self.remove, UNBOUNDED, |w, id| {
            w.u32(*id);
        });
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            add: r.list_of("EncapMapping.add", UNBOUNDED)?,
            remove: r.list("EncapMapping.remove", UNBOUNDED, |r| {
                r.u32("EncapMapping.remove")
            })?,
        })
    }
}
