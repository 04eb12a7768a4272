"""What a model is judged on: data sets, reference architectures, named tasks."""
