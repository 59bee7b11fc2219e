"""The supervisors' dashboard (分析研判看板): static pages served by the API process."""
