"""Plant-side programs: the DAS fleet simulator and the HJ 212 TCP bridge (``cems-gateway``)."""
