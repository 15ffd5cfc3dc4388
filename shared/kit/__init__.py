"""The event-sourcing kit every service is built on."""
