package main

import "context"

func scenario2(ctx context.Context, o *options) ([]row, error) { return nil, nil }
func scenario3(ctx context.Context, o *options) ([]row, error) { return nil, nil }
