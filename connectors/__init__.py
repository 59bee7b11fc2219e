"""The edges: inbound gateways and adapters that publish events, and outbound deliveries."""
