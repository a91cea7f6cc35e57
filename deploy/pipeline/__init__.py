"""The pipeline file: YAML with line numbers, validation against the runtime's own code, the
JSON Schema, ``shardline test`` cases, and compilation into the plan the runtime loads."""
