"""serving: serverless LLM serving layer (a later issue builds it)."""
