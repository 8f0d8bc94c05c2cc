"""Fake sales-channel order APIs (Tmall, JD, PDD, Douyin, Youzan) over the simulated world."""

from sim.channels.faults import FAULT_KINDS, Faults
from sim.channels.server import DEFAULT_CREDENTIALS, ENDPOINTS, ChannelServer

__all__ = ["DEFAULT_CREDENTIALS", "ENDPOINTS", "FAULT_KINDS", "ChannelServer", "Faults"]
