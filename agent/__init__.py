"""The gateway: collectors -> pipeline (rules engine) -> buffer -> TSDB writer and forwarder.

Exceptions the agent raises on purpose share one root, `agent.errors.AgentError`; each is
also importable from the module that raises it:

    AgentError
    ├── ConfigError        site.yaml or a standards file is invalid: every problem found,
    │                      each `FILE:LINE: key: message` (agent.yamldoc)
    ├── BufferFull         the disk is full: nothing was stored or changed; the caller keeps
    │                      what it holds and tries again (agent.buffer)
    ├── DeliveryError      the API did not take NC events now: kept, retried (agent.forward)
    │   ├── ClockSkew      refused over HTTP as dated ahead of the API's clock
    │   └── ClockAhead     the same from the API in this process (agent.runtime)
    ├── Rejected           the API refuses events for good: dead letters (agent.forward)
    └── TaskFailed         a task ended on its own: one error line, exit 1 (agent.runtime)

Anything else escaping a task is a bug or a fault every later item would meet too; what
one reading, message or event raises is handled where it happens (agent.pipeline).
"""
