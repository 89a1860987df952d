package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/stages/decrypt"
)

func cmdKeys(ctx context.Context, a *app, args []string) error {
	if len(args) == 0 || args[0] != "generate" {
		return usagef("keys: say generate TENANT")
	}
	fs := flags("keys generate")
	force := fs.Bool("force", false, "replace an existing key (files encrypted to the old one will no longer decrypt)")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("keys generate: give one TENANT")
	}
	pass := os.Getenv("ROSTER_KEY_PASSPHRASE")
	if pass == "" {
		return usagef("keys generate: set ROSTER_KEY_PASSPHRASE; it encrypts the private key in the database")
	}
	db, err := a.open(ctx)
	if err != nil {
		return err
	}
	store := pipeline.Tenants{DB: db}
	t, err := store.Get(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	if len(t.PGPPrivateKey) > 0 && !*force {
		return usagef("keys generate: %s already has key 0x%s; add --force to replace it", t.ID, t.PGPKeyID)
	}
	kp, err := decrypt.GenerateKey(t.ID, []byte(pass), time.Now())
	if err != nil {
		return err
	}
	t.PGPPublicKey, t.PGPPrivateKey, t.PGPKeyID = kp.PublicArmored, kp.PrivateArmored, kp.KeyID
	if err := store.Put(ctx, t); err != nil {
		return err
	}
	fmt.Fprintf(a.stderr, "key 0x%s issued to %s; give the customer this public key:\n", kp.KeyID, t.ID)
	fmt.Fprint(a.stdout, kp.PublicArmored)
	return nil
}
