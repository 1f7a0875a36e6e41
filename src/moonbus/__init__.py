"""moonbus: an embeddable, event-driven Lua scripting runtime for Python games."""
