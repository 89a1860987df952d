package main

import (
	"fmt"

	"golang.org/x/crypto/bcrypt"
)

// hashPassword is the slow hash roster stores for SFTP passwords.
func hashPassword(pw []byte) (string, error) {
	h, err := bcrypt.GenerateFromPassword(pw, bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("hash the password: %w", err)
	}
	return string(h), nil
}
