"""Wire protocols spoken by DAS gateways: HJ 212 (``cems.protocol.hj212``) and JSON over MQTT.

Submodules are imported explicitly (``from cems.protocol import hj212``) so that importing one protocol
does not pay for the others.
"""
